//! A box's network, as a user-defined Docker network gives a container one: a peer network
//! namespace of its own (where the rig runs the fake GitHub: the box's whole outside world), a
//! veth pair that is the box's only link and default route (MTU [`LINK_MTU`]), and Docker's
//! embedded resolver imitated inside the box's namespace ([`crate::dns`]), answering for the
//! peer's names and the box's hostname. Owns the peer namespace (`ip netns`, named after the
//! box's slot), the veth pairs it makes and the resolver threads; all go on drop. Nothing a box
//! sends leaves these namespaces.
//!
//! A network outlives the box's network namespaces: a Docker container gets a new one at every
//! start and is attached again ([`Network::attach`] once per namespace; the [`Attached`] value
//! lives as long as that namespace is the box's), a pod keeps one across container restarts.

use super::error::{Error, io_err};
use crate::dns;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The link MTU between the box and its peer: below 1500 on purpose, so the inner dockerd must
/// detect and apply it.
pub const LINK_MTU: u32 = 1400;

/// A tokio runtime on a thread inside a network namespace: every socket its tasks open lives there.
pub struct Netns {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Netns {
    /// Enters the namespace at `path` (`/proc/PID/ns/net` or `/run/netns/NAME`).
    pub fn enter(path: &Path) -> std::io::Result<Netns> {
        let ns = std::fs::File::open(path)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            if let Err(e) = nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET) {
                let _ = tx.send(Err(std::io::Error::from(e)));
                return;
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let _ = tx.send(Ok((rt.handle().clone(), stop_tx)));
            rt.block_on(async {
                let _ = stop_rx.await;
            });
        });
        let (handle, stop) = rx.recv().map_err(std::io::Error::other)??;
        Ok(Netns {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs `f` on the namespace's runtime and waits for it.
    pub fn run<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().expect("the netns runtime answered")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(io_err(format!("ip {}", args.join(" "))))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Setup(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The peer namespace and what the resolver says about it.
pub struct Network {
    name: String,
    slot: u8,
    /// The peer's end of every veth pair.
    pub peer_ip: Ipv4Addr,
    /// The box's end (the same at every attachment: Docker may hand out another, nothing here
    /// depends on it).
    pub box_ip: Ipv4Addr,
    peer_names: Vec<String>,
}

impl Network {
    /// The peer namespace `sysrunner-gh-SLOT`, with link 10.231.SLOT.0/30 to come: `slot` (the
    /// box's) keeps parallel boxes apart. `peer_names` are the names the box's resolver gives the
    /// peer's address (the rig's `github.fake`).
    pub fn create(slot: u8, peer_names: &[&str]) -> Result<Network, Error> {
        let name = format!("sysrunner-gh-{slot}");
        // A namespace of this slot's name belongs to a run that died without cleaning up.
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        let net = Network {
            name,
            slot,
            peer_ip: Ipv4Addr::new(10, 231, slot, 1),
            box_ip: Ipv4Addr::new(10, 231, slot, 2),
            peer_names: peer_names.iter().map(|s| s.to_string()).collect(),
        };
        ip(&["-n", &net.name, "link", "set", "lo", "up"])?;
        // The peer's address is its own before any box is attached (a Docker container is
        // attached only when it starts), so the fake can listen on it from the beginning; each
        // veth end gets it again with the link's /30.
        ip(&[
            "-n",
            &net.name,
            "addr",
            "add",
            &format!("{}/32", net.peer_ip),
            "dev",
            "lo",
        ])?;
        Ok(net)
    }

    /// `/run/netns/NAME`, for [`Netns::enter`].
    pub fn peer_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// What the box's resolver answers: every peer name, and the box's hostname.
    pub fn records(&self, hostname: &str) -> dns::Records {
        let mut r = dns::Records::new();
        for n in &self.peer_names {
            r.insert(n, self.peer_ip);
        }
        r.insert(hostname, self.box_ip);
        r
    }

    /// Joins the network namespace of host process `pid` (a box's PID 1, or a pod's sandbox) to
    /// the peer with a new veth pair (addresses, MTU, default route via the peer) and starts the
    /// resolver on `127.0.0.11:53` in it. Whatever an earlier attachment left (its namespace
    /// still going away) is removed first.
    pub fn attach(&self, pid: i32, hostname: &str) -> Result<Attached, Error> {
        let (gh, bx) = (format!("sgh{}", self.slot), format!("sbx{}", self.slot));
        // Deleting the peer's end deletes the pair, also an end in a dying namespace.
        let _ = ip(&["-n", &self.name, "link", "del", &gh]);
        let mtu = LINK_MTU.to_string();
        let n = self.name.as_str();
        let pid_s = pid.to_string();
        ip(&[
            "link", "add", &gh, "mtu", &mtu, "type", "veth", "peer", "name", &bx, "mtu", &mtu,
        ])?;
        let attached = Attached {
            peer_ns: self.name.clone(),
            peer_link: gh.clone(),
            dns: None,
        };
        ip(&["link", "set", &gh, "netns", n])?;
        ip(&["link", "set", &bx, "netns", &pid_s])?;
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{}/30", self.peer_ip),
            "dev",
            &gh,
        ])?;
        ip(&["-n", n, "link", "set", &gh, "up"])?;
        let in_box = |args: &[&str]| -> Result<(), Error> {
            let out = Command::new("nsenter")
                .arg(format!("--net=/proc/{pid}/ns/net"))
                .arg("ip")
                .args(args)
                .output()
                .map_err(io_err("nsenter ip"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(Error::Setup(format!(
                    "ip {} in the box: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        };
        in_box(&["addr", "add", &format!("{}/30", self.box_ip), "dev", &bx])?;
        in_box(&["link", "set", &bx, "up"])?;
        in_box(&["route", "add", "default", "via", &self.peer_ip.to_string()])?;
        let mut attached = attached;
        attached.dns = Some(start_resolver(pid, self.records(hostname))?);
        Ok(attached)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth ends, and with them the box's.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// The embedded resolver on its own thread in the namespace of host process `pid`.
pub fn start_resolver(pid: i32, records: dns::Records) -> Result<Resolver, Error> {
    let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let ns = Netns::enter(&path).map_err(io_err(format!("enter {}", path.display())))?;
    let server = ns
        .run(dns::serve(SocketAddr::from((dns::ADDRESS, 53)), records))
        .map_err(io_err("serve DNS on 127.0.0.11:53 in the box"))?;
    Ok(Resolver {
        server: Some(server),
        ns: Some(ns),
    })
}

/// A running resolver; dropping it stops it and leaves the namespace.
pub struct Resolver {
    server: Option<dns::Server>,
    ns: Option<Netns>,
}

impl Drop for Resolver {
    fn drop(&mut self) {
        // The server's tasks are aborted on its own runtime, then the runtime's thread ends and
        // with it this process's last reference to the box's namespace.
        if let (Some(s), Some(ns)) = (self.server.take(), self.ns.as_ref()) {
            ns.run(async move { drop(s) });
        }
        self.ns = None;
    }
}

/// One network namespace of the box, joined: its veth pair and its resolver. Dropping it stops
/// the resolver and deletes the pair.
pub struct Attached {
    peer_ns: String,
    peer_link: String,
    dns: Option<Resolver>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.dns = None;
        let _ = ip(&["-n", &self.peer_ns, "link", "del", &self.peer_link]);
    }
}
