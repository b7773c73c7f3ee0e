//! Who may drive the daemon, and which files they may make it open.
//!
//! The control socket's file mode (0660, group `--group`) is the first
//! gate, but a mode can be loosened by anyone who owns the file, and a
//! descriptor can be passed on. So each connection is also judged by the
//! kernel's word on who is at the other end (`SO_PEERCRED` and
//! `SO_PEERGROUPS`): root, the daemon's own user, or a member of the
//! configured group. Everyone else gets one error saying what to do and
//! the connection is closed before a request is read.
//!
//! The daemon usually runs as root, so a request that names a file (a pcap
//! port's `rx_pcap` and `tx_pcap`) would read or write with root's rights.
//! Root and the daemon's own user gain nothing from that and may name any
//! path. A group member may only name files inside the directories the
//! administrator gave with `--pcap-dir`: the path, with symbolic links
//! resolved, must lie below one of them. Whoever asks, pcap files are
//! opened without following a final symbolic link and must be regular
//! files (see `ports::pcap`), so no request reaches a device or a FIFO.

use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

use proto::{ErrorCode, RpcError};

use crate::config::{Config, InterfaceConfig};
use crate::datapath::Datapath;

/// The client at the other end of a control connection, as the kernel
/// knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    pub pid: i32,
}

impl Peer {
    /// The credentials of the process that connected `socket`.
    pub fn of(socket: &impl AsRawFd) -> std::io::Result<Peer> {
        let fd = socket.as_raw_fd();
        let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: `cred` is a valid, writable ucred and `len` holds its size,
        // as SO_PEERCRED requires; the kernel writes at most `len` bytes.
        let rc = unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &mut len)
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Peer { uid: cred.uid, gid: cred.gid, groups: peer_groups(fd)?, pid: cred.pid })
    }

    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// SO_PEERGROUPS: the supplementary groups the peer had when it connected.
fn peer_groups(fd: i32) -> std::io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = std::mem::size_of_val(groups.as_slice()) as libc::socklen_t;
        // SAFETY: the buffer is `len` writable bytes of gid_t, the element
        // type SO_PEERGROUPS fills; on ERANGE the kernel writes nothing but
        // the size it needs into `len`.
        let rc = unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERGROUPS, groups.as_mut_ptr().cast(), &mut len)
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ERANGE) || count <= groups.len() {
            return Err(error);
        }
        groups.resize(count, 0);
    }
}

/// The daemon's rules for clients.
#[derive(Debug, Clone)]
pub struct Access {
    daemon_uid: u32,
    group: Option<(String, u32)>,
    pcap_dirs: Vec<PathBuf>,
}

impl Access {
    /// `group` is a group name or number; `pcap_dirs` must exist.
    pub fn new(group: Option<&str>, pcap_dirs: &[PathBuf]) -> Result<Access, String> {
        let group = group.map(resolve_group).transpose()?;
        let pcap_dirs = pcap_dirs
            .iter()
            .map(|dir| {
                dir.canonicalize().map_err(|e| {
                    format!("--pcap-dir {}: {e}: create it first, or leave it out", dir.display())
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Access { daemon_uid: nix::unistd::geteuid().as_raw(), group, pcap_dirs })
    }

    /// The group that owns the control socket, if one was given.
    pub fn socket_group(&self) -> Option<u32> {
        self.group.as_ref().map(|(_, gid)| *gid)
    }

    /// Root and the daemon's own user: they could open any file the daemon
    /// can open themselves.
    fn is_administrator(&self, peer: &Peer) -> bool {
        peer.uid == 0 || peer.uid == self.daemon_uid
    }

    /// Whether `peer` may use the control socket at all.
    pub fn admit(&self, peer: &Peer) -> Result<(), RpcError> {
        if self.is_administrator(peer) || self.group.as_ref().is_some_and(|(_, gid)| peer.in_group(*gid)) {
            return Ok(());
        }
        let how = match &self.group {
            Some((name, _)) => format!("run it as root or as a member of group {name}"),
            None => "run it as root, or start vswitchd with --group GROUP and join that group".into(),
        };
        Err(RpcError::new(
            ErrorCode::PermissionDenied,
            format!("uid {} (pid {}) may not configure vswitchd: {how}", peer.uid, peer.pid),
        ))
    }

    /// Checks the files that the devices `new` adds to `old` would open on
    /// `peer`'s behalf.
    pub fn check_devices(&self, peer: &Peer, old: &Config, new: &Config) -> Result<(), RpcError> {
        if self.is_administrator(peer) {
            return Ok(());
        }
        for (_, port, interface) in Datapath::ports_needing_devices(old, new) {
            self.check_pcap_paths(&port, &interface)?;
        }
        Ok(())
    }

    fn check_pcap_paths(&self, port: &str, interface: &InterfaceConfig) -> Result<(), RpcError> {
        if interface.kind() != "pcap" {
            return Ok(());
        }
        for option in ["rx_pcap", "tx_pcap"] {
            let Some(path) = interface.options.get(option) else { continue };
            if !self.allows(Path::new(path)) {
                let dirs = if self.pcap_dirs.is_empty() {
                    "none: vswitchd was started without --pcap-dir".to_owned()
                } else {
                    self.pcap_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
                };
                return Err(RpcError::new(
                    ErrorCode::PermissionDenied,
                    format!(
                        "port {port}: options:{option}={path} is outside the directories open to group members ({dirs}); use a file there, or ask root"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether `path`'s directory, with links resolved, lies below an
    /// allowed directory. The file's own name must not be `..` (a final
    /// symbolic link is refused when the file is opened).
    fn allows(&self, path: &Path) -> bool {
        let (Some(dir), Some(Component::Normal(_))) = (path.parent(), path.components().next_back()) else {
            return false;
        };
        let Ok(dir) = dir.canonicalize() else { return false };
        self.pcap_dirs.iter().any(|allowed| dir.starts_with(allowed))
    }
}

fn resolve_group(group: &str) -> Result<(String, u32), String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok((group.to_owned(), gid));
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(found)) => Ok((group.to_owned(), found.gid.as_raw())),
        Ok(None) => {
            Err(format!("--group {group}: no such group; create it (groupadd {group}) or give a number"))
        }
        Err(e) => Err(format!("--group {group}: cannot look it up: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Map;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer { uid, gid, groups: groups.to_vec(), pid: 1234 }
    }

    fn pcap(options: &[(&str, &str)]) -> InterfaceConfig {
        let options: Map = options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        InterfaceConfig { r#type: "pcap".into(), options, ..Default::default() }
    }

    /// A configuration with one pcap port whose capture goes to `tx_pcap`.
    fn with_tx_pcap(tx_pcap: &Path) -> Config {
        let mut config = Config::default();
        config.apply(&proto::Command::AddBr { bridge: "br0".into(), may_exist: false }).unwrap();
        let port = proto::Command::AddPort {
            bridge: "br0".into(),
            port: "p1".into(),
            settings: vec![],
            may_exist: false,
        };
        config.apply(&port).unwrap();
        let settings = vec!["type=pcap".into(), format!("options:tx_pcap={}", tx_pcap.display())];
        let set = proto::Command::Set {
            table: proto::Table::Interface,
            record: "p1".into(),
            settings,
            if_exists: false,
        };
        config.apply(&set).unwrap();
        config
    }

    #[test]
    fn root_and_group_members_are_admitted_others_told_what_to_do() {
        let access = Access { daemon_uid: 0, group: Some(("vswitch".into(), 4242)), pcap_dirs: vec![] };
        assert!(access.admit(&peer(0, 0, &[])).is_ok());
        assert!(access.admit(&peer(1000, 4242, &[])).is_ok());
        assert!(access.admit(&peer(1000, 1000, &[27, 4242])).is_ok());
        let refused = access.admit(&peer(1000, 1000, &[27])).unwrap_err();
        assert_eq!(refused.code, ErrorCode::PermissionDenied.code());
        assert!(
            refused.message.contains("uid 1000") && refused.message.contains("group vswitch"),
            "{refused}"
        );

        let no_group = Access { group: None, ..access };
        let refused = no_group.admit(&peer(1000, 4242, &[])).unwrap_err();
        assert!(refused.message.contains("--group"), "{refused}");
    }

    #[test]
    fn group_members_name_pcap_files_only_inside_pcap_dirs() {
        let allowed = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir(allowed.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), allowed.path().join("escape")).unwrap();
        let access = Access::new(Some("4242"), &[allowed.path().to_path_buf()]).unwrap();
        let member = peer(1000, 4242, &[]);
        let check = |path: PathBuf| access.check_devices(&member, &Config::default(), &with_tx_pcap(&path));
        assert!(check(allowed.path().join("p1.pcap")).is_ok());
        assert!(check(allowed.path().join("sub/p1.pcap")).is_ok());
        let refused = check(elsewhere.path().join("p1.pcap")).unwrap_err();
        assert_eq!(refused.code, ErrorCode::PermissionDenied.code());
        assert!(
            refused.message.contains("options:tx_pcap=") && refused.message.contains("ask root"),
            "{refused}"
        );
        assert!(check(allowed.path().join("escape/p1.pcap")).is_err(), "a link out of the directory");
        assert!(check(allowed.path().join("sub/../../etc")).is_err(), "dot-dot out of the directory");
        assert!(check(allowed.path().join("..")).is_err());
        assert!(check(PathBuf::from("/etc/shadow")).is_err());
        // The administrator is not limited.
        let admin = peer(0, 0, &[]);
        assert!(access
            .check_devices(&admin, &Config::default(), &with_tx_pcap(Path::new("/etc/x.pcap")))
            .is_ok());
        assert!(access.check_pcap_paths("p1", &pcap(&[("rx_pcap", "/etc/x.pcap")])).is_err());
    }

    #[test]
    fn unknown_groups_and_missing_dirs_stop_the_start() {
        let e = Access::new(Some("no-such-group-vswitch"), &[]).unwrap_err();
        assert!(e.contains("no such group"), "{e}");
        let e = Access::new(None, &[PathBuf::from("/nonexistent/vswitch-pcaps")]).unwrap_err();
        assert!(e.contains("--pcap-dir"), "{e}");
    }
}
