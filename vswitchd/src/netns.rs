//! Attaching a container's network namespace to a bridge, as
//! `ovs-docker add-port` does with `ip`, done here over netlink.
//!
//! A veth pair is created in the daemon's namespace; its peer is moved into
//! the container's namespace, renamed, given its MAC, MTU, address and
//! default route, and brought up; the host end becomes a `system` port.
//! Work inside the container's namespace runs on a thread of its own that
//! `setns`es first, so no shared thread ever changes namespace. Any failure
//! after the pair exists deletes it again: nothing half-made is left.
//!
//! A namespace is named as `ip netns` names it (`/run/netns/NAME`), by a
//! path to a namespace file, or by a process id (`/proc/PID/ns/net`).

use std::fs::File;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use futures_util::TryStreamExt;
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// What the container's end of the pair gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachment {
    pub netns: String,
    pub ifname: String,
    pub ip: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
}

pub fn resolve_netns(spec: &str) -> Result<PathBuf, String> {
    let path = if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        let path = PathBuf::from(format!("/proc/{spec}/ns/net"));
        if !path.exists() {
            return Err(format!("no process with pid {spec}, so no network namespace to attach"));
        }
        path
    } else if spec.contains('/') {
        PathBuf::from(spec)
    } else {
        PathBuf::from("/run/netns").join(spec)
    };
    if !path.exists() {
        return Err(if spec.contains('/') {
            format!("no network namespace file at {spec}")
        } else {
            format!("no network namespace named {spec} (see `ip netns list`)")
        });
    }
    Ok(path)
}

pub fn netns_exists(spec: &str) -> bool {
    resolve_netns(spec).is_ok()
}

/// A host-side interface name for the container's interface, unique among
/// those `taken` says exist: `vc` and 8 hex digits.
pub fn host_name(netns: &str, ifname: &str, taken: impl Fn(&str) -> bool) -> String {
    for salt in 0u32.. {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (netns, ifname, salt).hash(&mut h);
        let name = format!("vc{:08x}", h.finish() as u32);
        if !taken(&name) && crate::ports::sys::ifindex(&name).is_none() {
            return name;
        }
    }
    unreachable!("some salt gives a free name")
}

/// Runs a netlink conversation on a thread of its own, in `netns` if given.
fn with_netlink<T, F, Fut>(netns: Option<&File>, work: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, String>>,
{
    let ns_fd = match netns {
        Some(f) => Some(f.try_clone().map_err(|e| format!("cannot use the namespace file: {e}"))?),
        None => None,
    };
    std::thread::spawn(move || {
        if let Some(fd) = &ns_fd {
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("cannot enter the container's network namespace: {e}"))?;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| format!("cannot start a netlink runtime: {e}"))?;
        runtime.block_on(async move {
            let (connection, handle, _) =
                rtnetlink::new_connection().map_err(|e| format!("cannot open a netlink socket: {e}"))?;
            tokio::spawn(connection);
            work(handle).await
        })
    })
    .join()
    .map_err(|_| "the netlink thread panicked".to_owned())?
}

async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>, String> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(format!("cannot look up interface {name}: {e}")),
    }
}

fn netlink_error(what: &str, e: rtnetlink::Error) -> String {
    format!("{what}: {e}")
}

/// Creates the pair and configures the container's end; on failure the
/// pair is deleted. The host end `host` is left up, ready to be a port.
pub fn attach(host: &str, attachment: &Attachment) -> Result<(), String> {
    let netns = File::open(resolve_netns(&attachment.netns)?)
        .map_err(|e| format!("cannot open the network namespace {}: {e}", attachment.netns))?;
    let peer = format!("{host}p");
    let (host_s, peer_s, mtu, ns_fd) = (host.to_owned(), peer.clone(), attachment.mtu, netns.as_raw_fd());
    with_netlink(None, move |handle| async move {
        let mut veth = LinkVeth::new(&host_s, &peer_s);
        if let Some(mtu) = mtu {
            veth = veth.mtu(mtu);
        }
        handle
            .link()
            .add(veth.build())
            .execute()
            .await
            .map_err(|e| netlink_error("cannot create a veth pair", e))?;
        let index = index_of(&handle, &peer_s).await?.ok_or("the new veth peer vanished")?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).setns_by_fd(ns_fd).build())
            .execute()
            .await
            .map_err(|e| netlink_error("cannot move the veth peer into the namespace", e))
    })
    .inspect_err(|_| {
        let _ = detach(host);
    })?;
    let inside = attachment.clone();
    let configured = with_netlink(Some(&netns), move |handle| async move {
        if index_of(&handle, &inside.ifname).await?.is_some() {
            return Err(format!(
                "the namespace {} already has an interface named {}; pick another name",
                inside.netns, inside.ifname
            ));
        }
        let index = index_of(&handle, &peer).await?.ok_or("the veth peer did not arrive in the namespace")?;
        let mut link = LinkUnspec::new_with_index(index).name(inside.ifname.clone());
        if let Some(mac) = inside.mac {
            link = link.address(mac.to_vec());
        }
        if let Some(mtu) = inside.mtu {
            link = link.mtu(mtu);
        }
        handle
            .link()
            .set(link.build())
            .execute()
            .await
            .map_err(|e| netlink_error("cannot rename the interface", e))?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| netlink_error("cannot bring the interface up", e))?;
        if let Some(lo) = index_of(&handle, "lo").await? {
            let _ = handle.link().set(LinkUnspec::new_with_index(lo).up().build()).execute().await;
        }
        if let Some((ip, prefix)) = inside.ip {
            handle
                .address()
                .add(index, ip, prefix)
                .execute()
                .await
                .map_err(|e| netlink_error(&format!("cannot add address {ip}/{prefix}"), e))?;
        }
        if let Some(gateway) = inside.gateway {
            let route = match gateway {
                IpAddr::V4(gw) => RouteMessageBuilder::<std::net::Ipv4Addr>::new().gateway(gw).build(),
                IpAddr::V6(gw) => RouteMessageBuilder::<std::net::Ipv6Addr>::new().gateway(gw).build(),
            };
            handle
                .route()
                .add(route)
                .execute()
                .await
                .map_err(|e| netlink_error(&format!("cannot add the default route via {gateway}"), e))?;
        }
        Ok(())
    });
    if let Err(e) = configured {
        let _ = detach(host);
        return Err(e);
    }
    let host_s = host.to_owned();
    with_netlink(None, move |handle| async move {
        let index = index_of(&handle, &host_s).await?.ok_or("the host end of the veth vanished")?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| netlink_error("cannot bring the host end up", e))
    })
    .inspect_err(|_| {
        let _ = detach(host);
    })
}

/// Deletes the host end (and with it the container's end); a pair that is
/// already gone is fine.
pub fn detach(host: &str) -> Result<(), String> {
    let host = host.to_owned();
    with_netlink(None, move |handle| async move {
        match index_of(&handle, &host).await? {
            Some(index) => match handle.link().del(index).execute().await {
                Ok(()) => Ok(()),
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(()),
                Err(e) => Err(netlink_error(&format!("cannot delete {host}"), e)),
            },
            None => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_resolve_or_explain() {
        let me = std::process::id().to_string();
        assert_eq!(resolve_netns(&me).unwrap(), PathBuf::from(format!("/proc/{me}/ns/net")));
        assert!(resolve_netns("no-such-namespace-xyz").unwrap_err().contains("ip netns list"));
        assert!(resolve_netns("/no/such/file").unwrap_err().contains("/no/such/file"));
        assert!(resolve_netns("999999999").unwrap_err().contains("no process"));
    }

    #[test]
    fn host_names_fit_and_avoid_taken_ones() {
        let first = host_name("web1", "eth0", |_| false);
        assert!(first.len() <= 15 && first.starts_with("vc"));
        let second = host_name("web1", "eth0", |n| n == first);
        assert_ne!(first, second);
    }
}
