//! Live checks that only make sense in the running container, skipped with `--root`: the default
//! route's MTU over netlink (never `/sys/class/net`, which sysbox 0.7 fills with the host's
//! interfaces), a tmpfs mount and unmount, and a test cgroup made and removed. Each undoes itself,
//! and leaves everything else (the network, other cgroups, other mounts) untouched.

use futures_util::TryStreamExt;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Serialize)]
pub struct Live {
    /// The default route's interface and its MTU.
    pub default_route: Option<RouteMtu>,
    pub mtu_error: Option<String>,
    /// `None`: mounting a tmpfs worked.
    pub mount_error: Option<String>,
    /// `None`: creating and removing a cgroup worked.
    pub cgroup_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteMtu {
    pub interface: String,
    pub mtu: u32,
}

pub async fn check(cgroup_dir: Option<PathBuf>) -> Live {
    let (default_route, mtu_error) = match default_route_mtu().await {
        Ok(Some(r)) => (Some(r), None),
        Ok(None) => (None, Some("no default route".to_string())),
        Err(e) => (None, Some(e)),
    };
    Live {
        default_route,
        mtu_error,
        mount_error: tmpfs_round_trip().err(),
        cgroup_error: cgroup_dir.and_then(|d| cgroup_round_trip(&d).err()),
    }
}

/// The IPv4 default route's output interface, and that interface's MTU, asked of the kernel over
/// rtnetlink.
pub async fn default_route_mtu() -> Result<Option<RouteMtu>, String> {
    use rtnetlink::packet_route::link::LinkAttribute;
    use rtnetlink::packet_route::route::RouteAttribute;
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| format!("netlink: {e}"))?;
    let task = tokio::spawn(conn);
    let result = async {
        let msg = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build();
        let routes: Vec<_> = handle
            .route()
            .get(msg)
            .execute()
            .try_collect()
            .await
            .map_err(|e| format!("netlink route dump: {e}"))?;
        let oif = routes
            .iter()
            .filter(|r| r.header.destination_prefix_length == 0)
            .find_map(|r| {
                r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                })
            });
        let Some(index) = oif else {
            return Ok(None);
        };
        let links: Vec<_> = handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| format!("netlink link {index}: {e}"))?;
        let link = links.first().ok_or(format!("no link with index {index}"))?;
        let mut name = String::new();
        let mut mtu = None;
        for a in &link.attributes {
            match a {
                LinkAttribute::IfName(n) => name = n.clone(),
                LinkAttribute::Mtu(m) => mtu = Some(*m),
                _ => {}
            }
        }
        Ok(mtu.map(|mtu| RouteMtu {
            interface: name,
            mtu,
        }))
    }
    .await;
    task.abort();
    result
}

fn tmpfs_round_trip() -> Result<(), String> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let dir = tempdir_in_run().map_err(|e| format!("temporary directory: {e}"))?;
    let r = mount(
        Some("tmpfs"),
        dir.as_path(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=64k"),
    )
    .map_err(|e| e.to_string())
    .and_then(|()| umount2(dir.as_path(), MntFlags::MNT_DETACH).map_err(|e| e.to_string()));
    let _ = std::fs::remove_dir(&dir);
    r
}

fn tempdir_in_run() -> std::io::Result<PathBuf> {
    let base = if Path::new("/run").is_dir() {
        "/run"
    } else {
        "/tmp"
    };
    let dir = Path::new(base).join(format!("sysrunner-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn cgroup_round_trip(parent: &Path) -> Result<(), String> {
    let dir = parent.join(format!("sysrunner-probe-{}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::remove_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))
}
