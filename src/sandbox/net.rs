//! The life's network: the life's own network namespace joined to the container's by a veth pair,
//! with NAT towards whatever the container reaches, and firewall rules in the container's namespace
//! that let the life reach only the DNS relay there. Owns the choice of addresses and names (the
//! pure [`plan`]), the pair, the life side's addresses, links and routes, and the rules it tags in
//! the container's namespace ([`prepare`] and [`Rules::connect`], [`Guard::release`],
//! [`Guard::teardown`], [`sweep`]). Leaves to others:
//! unsharing the life's namespace (the life's init), the relay that answers on [`Plan::dns`]
//! (`sandbox::dns`), the life's `resolv.conf` (the mount plan), which iptables backend the
//! container uses (the dockerd plan), and waiting for children (the reaper).
//!
//! ## The design
//!
//! **Addresses.** Each life gets a /30 of [`RANGE`], 198.19.0.0/16: the container end is its first
//! address, the life end its second. The range is the upper half of 198.18.0.0/15, which RFC 2544
//! reserves for benchmarking and IANA lists as not globally reachable, so neither a LAN, a cloud's
//! VPC nor a Kubernetes cluster is likely to use it for something a job must reach (10/8 and
//! 100.64/10 carry pod, VPC and Tailscale networks; 169.254/16 carries Calico's gateway and cloud
//! metadata). The lower half is left alone because proxies that fake DNS answers hand out
//! addresses from it (Clash's `fake-ip-range` default is 198.18.0.1/16). It is outside Docker's
//! default address pools (172.17.0.0/16 … 172.31.0.0/16 and 192.168.0.0/16 in /20s, moby
//! `libnetwork/ipamutils`), so the inner dockerd's bridges never meet it. Life `n` starts at slot
//! `n mod 16384` and takes the first slot after it that overlaps nothing the container uses, so
//! consecutive lives get different /30s even while the previous one is still tearing down.
//!
//! **What the inner dockerd must avoid.** Since Docker 23 (moby PR #42598, `InferReservedNetworks`
//! in `libnetwork/netutils/utils_linux.go`) dockerd picks pools that overlap neither a nameserver
//! of its `resolv.conf` nor an *on-link* (scope link) IPv4 route of its network namespace; routes
//! through a gateway do not count. In the life it would otherwise see only its own /30 and the
//! default route, and could give a job's network the very subnet the container sits on (a compose
//! network is 172.18.0.0/16 more often than not), cutting the life off from it. So every network
//! of the container becomes an on-link route on the life's link ([`Plan::extra_routes`]), and the
//! container end answers ARP for those addresses (`proxy_arp`, with `proxy_delay` 0 so the answer
//! is not held back for up to 0.8 s; Calico's CNI plugin sets both on its host-side veths for the
//! same reason). The packets then take the same path as through the default route: forwarded by
//! the container, masqueraded.
//!
//! **Rules in the container's namespace**, each tagged `-m comment --comment sysrunner-life-<n>`
//! so that teardown finds exactly its own ([`Plan::rules`]):
//! - `nat POSTROUTING -s <life /30> -j MASQUERADE`: the life's traffic leaves with the container's
//!   address, so nothing outside needs a route back.
//! - `filter FORWARD`: from the life's link to another life's link, DROP (a life must not reach the
//!   one before it while that one tears down); from the life's link, ACCEPT; towards it, ACCEPT
//!   replies only (`ctstate RELATED,ESTABLISHED`), so nothing can open a connection into the life.
//! - `filter INPUT` from the life's link: UDP and TCP 53 to the container end (the relay) are
//!   accepted, everything else is dropped. Without this the life could reach every listener of
//!   the container's namespace on any of its addresses (sysrunner's own health endpoint, a
//!   sidecar's port in a pod), NAT or not.
//!
//! The rules are inserted at the head of their chains, so a container whose chains end in DROP (or
//! whose policies are DROP) still forwards the life's traffic, and no earlier ACCEPT can open the
//! container's listeners to the life.
//!
//! **IPv6** is switched off on the container end (`disable_ipv6`): the kernel would give it a
//! link-local address, and a listener on `[::]` in the container's namespace would answer the life
//! there, past every IPv4 rule. The life gets no IPv6 route out.
//!
//! **What ends with the life.** Links, addresses, routes and rules a job makes inside the life's
//! namespace are freed with it, and freeing it destroys the veth pair (network_namespaces(7)).
//! What sysrunner adds in the container's namespace does not end by itself, and that namespace may
//! outlive a container start (a Kubernetes pod keeps it across restarts): at a life's end
//! [`Guard::release`] cuts the container end off and removes every rule tagged with the life,
//! leaving the pair to go with the life's namespace ([`Guard::teardown`], for a life that may
//! still run, deletes the pair too), and [`sweep`] removes every rule and link a crashed
//! sysrunner left behind. `ip_forward` stays on once set: it is a property
//! of the namespace, not of a life, and writing it resets other per-interface settings
//! (ip-sysctl.rst), so it is written only when it is off.

use crate::dockerd::Iptables;
use crate::netops::{self, Connection, is_errno, restore_script};
pub use crate::process::{Commands, Output};
use crate::reaper::{ExitStatus, Reaper};
use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteScope, RouteType};
use rtnetlink::packet_route::{AddressFamily, address::AddressAttribute};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where every life's /30 comes from (see the module doc for why this range).
pub const RANGE: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(198, 19, 0, 0), 16);
/// Each life's link: two addresses, the container end and the life end.
pub const PREFIX: u8 = 30;
/// The life end's name in the life: what a job expects a container's link to be called.
pub const LIFE_IF: &str = "eth0";
/// The relay's port on the container end.
pub const DNS_PORT: u16 = 53;
/// The container end is `vlife<n>`: at most 5 + 10 digits, IFNAMSIZ - 1 = 15 for any `u32`.
const HOST_IF_PREFIX: &str = "vlife";
/// Every rule of life `n` carries the comment `sysrunner-life-<n>`.
const TAG_PREFIX: &str = "sysrunner-life-";
/// The smallest MTU IPv4 allows (RFC 791) and the largest a veth takes.
const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// What no life gets a route to through the container: the default route is added on its own,
/// and loopback, "this network", link-local, multicast and reserved addresses are never forwarded
/// to (a link-local route in the container, such as Calico's 169.254.1.1, belongs to its own link).
const NEVER_ROUTED: [Ipv4Net; 5] = [
    Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4),
    Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// One life's network, decided before anything is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub life: u32,
    /// The container end, in the container's namespace: `vlife<n>`.
    pub host_if: String,
    /// The life end, in the life's namespace: [`LIFE_IF`].
    pub life_if: String,
    /// The link's /30.
    pub net: Ipv4Net,
    /// The container end's address: the life's gateway, and where the relay listens.
    pub host_addr: Ipv4Addr,
    pub life_addr: Ipv4Addr,
    pub prefix: u8,
    /// Both ends' MTU: the container's own link MTU.
    pub mtu: u32,
    /// Where the life's resolver points, and where `sandbox::dns` must listen (UDP and TCP).
    pub dns: SocketAddr,
    /// The container's own networks, routed on-link in the life so that its dockerd leaves them
    /// alone (see the module doc).
    pub extra_routes: Vec<Ipv4Net>,
    /// The comment on every rule of this life.
    pub tag: String,
}

/// The life's network for life number `life`, with the container's link MTU `mtu` (the probe's
/// `live.default_route.mtu`, 1500 when it found none) and the networks the container already uses
/// (`taken`: [`container_networks`], plus the container's nameservers as /32s so that the inner
/// dockerd avoids them too). The /30 overlaps nothing in `taken` but a default route.
pub fn plan(life: u32, mtu: u32, taken: &[Ipv4Net]) -> Result<Plan, NetError> {
    if !MTU_RANGE.contains(&mtu) {
        return Err(NetError::Mtu { mtu });
    }
    let slots = 1u32 << (PREFIX - RANGE.prefix_len());
    let base = u32::from(RANGE.network());
    let net = (0..slots)
        .map(|i| (life % slots + i) % slots)
        .map(|slot| Ipv4Net::new_assert(Ipv4Addr::from(base + slot * 4), PREFIX))
        // A default route covers everything and says nothing about what is in use.
        .find(|net| !taken.iter().any(|t| t.prefix_len() > 0 && overlap(net, t)))
        .ok_or(NetError::Exhausted { range: RANGE, life })?;
    let host_addr = Ipv4Addr::from(u32::from(net.network()) + 1);
    Ok(Plan {
        life,
        host_if: format!("{HOST_IF_PREFIX}{life}"),
        life_if: LIFE_IF.to_owned(),
        net,
        host_addr,
        life_addr: Ipv4Addr::from(u32::from(net.network()) + 2),
        prefix: PREFIX,
        mtu,
        dns: SocketAddr::new(IpAddr::V4(host_addr), DNS_PORT),
        extra_routes: extra_routes(taken),
        tag: tag(life),
    })
}

fn tag(life: u32) -> String {
    format!("{TAG_PREFIX}{life}")
}

fn overlap(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The container's networks as routes for the life: truncated to their networks, merged, without
/// the default route, what is never routed, and other lives' links (inside [`RANGE`], which no
/// dockerd pool reaches).
fn extra_routes(taken: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let nets: Vec<Ipv4Net> = taken
        .iter()
        .map(Ipv4Net::trunc)
        .filter(|n| n.prefix_len() > 0)
        .filter(|n| !overlap(n, &RANGE))
        .filter(|n| !NEVER_ROUTED.iter().any(|never| overlap(n, never)))
        .collect();
    Ipv4Net::aggregate(&nets)
}

/// One iptables rule: `-t <table> -I <chain> <spec…>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: &'static str,
    pub chain: &'static str,
    pub spec: Vec<String>,
}

impl Plan {
    /// The rules this life adds in the container's namespace, in the order they must stand in
    /// each chain (first match wins). Every one carries this life's tag, before its target.
    pub fn rules(&self) -> Vec<Rule> {
        let host_if = self.host_if.as_str();
        let other_lives = format!("{HOST_IF_PREFIX}+");
        let relay = format!("{}/32", self.host_addr);
        let port = DNS_PORT.to_string();
        let rule = |table, chain, spec: &[&str]| {
            let mut spec: Vec<String> = spec.iter().map(|s| s.to_string()).collect();
            let target = spec.split_off(spec.len() - 2);
            spec.extend(["-m", "comment", "--comment", &self.tag].map(String::from));
            spec.extend(target);
            Rule { table, chain, spec }
        };
        vec![
            rule(
                "nat",
                "POSTROUTING",
                &["-s", &self.net.to_string(), "-j", "MASQUERADE"],
            ),
            rule(
                "filter",
                "FORWARD",
                &["-i", host_if, "-o", &other_lives, "-j", "DROP"],
            ),
            rule("filter", "FORWARD", &["-i", host_if, "-j", "ACCEPT"]),
            rule(
                "filter",
                "FORWARD",
                &[
                    "-o",
                    host_if,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "RELATED,ESTABLISHED",
                    "-j",
                    "ACCEPT",
                ],
            ),
            rule(
                "filter",
                "INPUT",
                &[
                    "-i", host_if, "-d", &relay, "-p", "udp", "--dport", &port, "-j", "ACCEPT",
                ],
            ),
            rule(
                "filter",
                "INPUT",
                &[
                    "-i", host_if, "-d", &relay, "-p", "tcp", "--dport", &port, "-j", "ACCEPT",
                ],
            ),
            rule("filter", "INPUT", &["-i", host_if, "-j", "DROP"]),
        ]
    }
}

/// The `-D <chain> <spec…>` lines, per table, for the rules in an `iptables-save` dump whose
/// comment `select` picks. A rule with a quoted comment is never one of ours, since tags have no
/// characters that need quoting. What [`Firewall::remove`] deletes, for the tests to read.
#[cfg(test)]
fn deletions(dump: &str, select: impl Fn(&str) -> bool) -> BTreeMap<String, Vec<String>> {
    netops::deletions_where(dump, |_, words| comment(words).is_some_and(&select))
}

/// A saved rule's comment, as its words carry it.
fn comment<'a>(words: &[&'a str]) -> Option<&'a str> {
    words.windows(2).find(|w| w[0] == "--comment").map(|w| w[1])
}

/// `iptables-restore --noflush` input that inserts `rules` at the heads of their chains, in the
/// order given (`-I <chain> 1`, `-I <chain> 2`, …), one table after another.
fn insert_script(rules: &[Rule]) -> String {
    let mut by_table: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut position: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for r in rules {
        let n = position.entry((r.table, r.chain)).or_insert(0);
        *n += 1;
        by_table.entry(r.table).or_default().push(format!(
            "-I {} {n} {}",
            r.chain,
            r.spec.join(" ")
        ));
    }
    restore_script(by_table)
}

/// The deletions of exactly `rules`, as [`insert_script`] put them in: one iptables-restore and no
/// iptables-save, for a teardown that knows what it inserted.
fn delete_script(rules: &[Rule]) -> String {
    let mut by_table: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in rules {
        by_table
            .entry(r.table)
            .or_default()
            .push(format!("-D {} {}", r.chain, r.spec.join(" ")));
    }
    restore_script(by_table)
}

/// True for any life's tag: `sysrunner-life-` and digits only.
fn any_life(comment: &str) -> bool {
    comment
        .strip_prefix(TAG_PREFIX)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// True for any life's container end: `vlife` and digits only.
fn any_life_link(name: &str) -> bool {
    name.strip_prefix(HOST_IF_PREFIX)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Every /30 of the range overlaps the container's networks: a restart does not help.
    #[error(
        "no free /{PREFIX} left in {range} for life {life}: the container's own networks cover it"
    )]
    Exhausted { range: Ipv4Net, life: u32 },
    #[error("MTU {mtu} cannot be a veth's: expected 68 to 65535")]
    Mtu { mtu: u32 },
    #[error("cannot open the network namespace of the life's process {pid}: {source}")]
    Namespace { pid: i32, source: io::Error },
    /// The life's process has not unshared its network namespace: configuring "its" namespace
    /// would reconfigure the container's own.
    #[error(
        "the life's process {pid} is in sysrunner's own network namespace: the life must have its own"
    )]
    SharedNamespace { pid: i32 },
    #[error("cannot {what}: {source}")]
    Netlink {
        what: String,
        source: Box<rtnetlink::Error>,
    },
    #[error(
        "{name} exists already: this life number is set up already, or a sysrunner before this one left it (sweep removes it at start)"
    )]
    LinkExists { name: String },
    #[error("cannot {what}: {source}")]
    Io { what: String, source: io::Error },
    /// `/proc/sys` read-only (a container without sysbox or `--privileged`).
    #[error("cannot write {value} to {}: {source}", path.display())]
    Sysctl {
        path: PathBuf,
        value: &'static str,
        source: io::Error,
    },
    #[error(
        "{binary} is not on PATH: the image must have the iptables backend the dockerd plan chose"
    )]
    IptablesMissing { binary: String },
    #[error("{command} failed ({status}): {stderr}; its input was:\n{input}")]
    Iptables {
        command: String,
        input: String,
        status: ExitStatus,
        stderr: String,
    },
}

impl From<netops::FirewallError> for NetError {
    fn from(e: netops::FirewallError) -> NetError {
        match e {
            netops::FirewallError::Missing { binary } => NetError::IptablesMissing { binary },
            netops::FirewallError::Io { command, source } => NetError::Io {
                what: format!("run {command}"),
                source,
            },
            netops::FirewallError::Failed {
                command,
                input,
                status,
                stderr,
            } => NetError::Iptables {
                command,
                input,
                status,
                stderr,
            },
        }
    }
}

impl NetError {
    /// True when a fresh container cannot do better: the container lacks something, or the
    /// numbers are wrong. Netlink, I/O and iptables failures may be passing (a link of a life that
    /// is still being freed, the xtables lock held too long).
    pub fn permanent(&self) -> bool {
        matches!(
            self,
            NetError::Exhausted { .. }
                | NetError::Mtu { .. }
                | NetError::SharedNamespace { .. }
                | NetError::Sysctl { .. }
                | NetError::IptablesMissing { .. }
        )
    }
}

/// The container's iptables backend (see [`netops::Firewall`]), with the life's ways of changing
/// it: rules tagged by their comment.
#[derive(Clone)]
struct Firewall<C>(netops::Firewall<C>);

impl<C: Commands> Firewall<C> {
    /// `iptables-legacy-*` or `iptables-nft-*` from PATH: the backend the inner dockerd was set
    /// up with, so that both speak to the same tables.
    fn find(backend: Iptables, commands: C) -> Result<Self, NetError> {
        Ok(Firewall(netops::Firewall::find(
            backend.as_str(),
            netops::Family::V4,
            commands,
        )?))
    }

    async fn insert(&self, rules: &[Rule]) -> Result<(), NetError> {
        Ok(self.0.apply(insert_script(rules)).await?)
    }

    /// Deletes exactly `rules`; where that fails (one is gone already: iptables-restore applies
    /// all of a table or nothing), every rule whose comment `select` picks.
    async fn remove_exactly(
        &self,
        rules: &[Rule],
        select: impl Fn(&str) -> bool,
    ) -> Result<usize, NetError> {
        match self.0.apply(delete_script(rules)).await {
            Ok(()) => Ok(rules.len()),
            Err(_) => self.remove(select).await,
        }
    }

    /// Deletes every rule whose comment `select` picks; returns how many went.
    async fn remove(&self, select: impl Fn(&str) -> bool) -> Result<usize, NetError> {
        Ok(self
            .0
            .remove_where(|_, words| comment(words).is_some_and(&select))
            .await?)
    }
}

/// The networks the container uses, as the inner dockerd would see them had it run in the
/// container: the networks of its IPv4 addresses and its on-link routes (the main table's unicast
/// routes of scope link), read over rtnetlink in the calling thread's network namespace. Routes
/// through a gateway are left out, as Docker ≥ 23 leaves them out: a VPN's 0.0.0.0/1 would
/// otherwise reserve everything.
pub async fn container_networks() -> Result<Vec<Ipv4Net>, NetError> {
    let (conn, handle) = netlink_here()?;
    let addrs: Vec<_> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(netlink_error("list the container's addresses"))?;
    let routes: Vec<_> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(netlink_error("list the container's routes"))?;
    drop(conn);
    let mut nets = Vec::new();
    for a in &addrs {
        if a.header.family != AddressFamily::Inet {
            continue;
        }
        let addr = a.attributes.iter().find_map(|at| match at {
            AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        if let Some(net) = addr.and_then(|ip| Ipv4Net::new(ip, a.header.prefix_len).ok()) {
            nets.push(net.trunc());
        }
    }
    for r in &routes {
        let h = &r.header;
        if h.table != rtnetlink::packet_route::route::RouteHeader::RT_TABLE_MAIN
            || h.kind != RouteType::Unicast
            || h.scope != RouteScope::Link
            || h.destination_prefix_length == 0
        {
            continue;
        }
        let dst = r.attributes.iter().find_map(|at| match at {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        if let Some(net) = dst.and_then(|ip| Ipv4Net::new(ip, h.destination_prefix_length).ok()) {
            nets.push(net.trunc());
        }
    }
    nets.sort();
    nets.dedup();
    Ok(nets)
}

/// What [`setup`] made in the container's namespace, until [`Guard::teardown`] removes it.
///
/// Teardown is async (netlink, iptables through the reaper), so dropping a guard cannot do it: a
/// guard dropped armed only logs what it left behind, for [`sweep`] to remove at the next start.
#[must_use = "the life's rules stay in the container's namespace until teardown"]
pub struct Guard<C: Commands = Reaper> {
    life: u32,
    host_if: String,
    /// The rules setup inserted.
    rules: Vec<Rule>,
    firewall: Firewall<C>,
    armed: bool,
}

impl<C: Commands> Guard<C> {
    pub fn life(&self) -> u32 {
        self.life
    }

    /// Removes the container end (which destroys the pair, if the life's namespace has not done
    /// so already) and every rule tagged with this life. Idempotent: what is gone already is not
    /// an error. When the container end cannot be cut off, the rules stay, since they still keep
    /// a life that may be running away from the container's listeners; [`sweep`] removes them at
    /// the next start. Otherwise tries both, and returns the first failure.
    pub async fn teardown(mut self) -> Result<(), NetError> {
        self.armed = false;
        remove_life(self.life, &self.host_if, &self.rules, &self.firewall, true).await
    }

    /// The end of a life: cuts the container end off (down) and removes the life's rules, but
    /// leaves the pair to the kernel, which destroys it with the life's network namespace once
    /// the life's last process has ended (deleting a veth waits ≈20 ms for RCU readers; the
    /// kernel does it in its own time). May run while the life's processes are being killed:
    /// the link is down before the rules go. Called for a life that does not end (whose
    /// namespace something still holds), the down link stays in the container's namespace,
    /// without an address or a route, until that namespace ends.
    pub async fn release(mut self) -> Result<(), NetError> {
        self.armed = false;
        remove_life(self.life, &self.host_if, &self.rules, &self.firewall, false).await
    }
}

impl<C: Commands> Drop for Guard<C> {
    fn drop(&mut self) {
        if self.armed {
            tracing::warn!(
                life = self.life,
                "the life's network was not torn down: {} and the rules tagged {} stay in the container's network namespace until the next start sweeps them",
                self.host_if,
                tag(self.life)
            );
        }
    }
}

async fn remove_life<C: Commands>(
    life: u32,
    host_if: &str,
    rules: &[Rule],
    firewall: &Firewall<C>,
    delete_link: bool,
) -> Result<(), NetError> {
    // The container end goes down first, which cuts the life off at once (a veth drops what
    // its peer sends while it is down); then its rules and the link go together. Deleting a
    // veth is the slow part (≈20 ms here: the kernel waits for RCU readers), and a live life
    // must never be left with its link up and its INPUT rules gone.
    let cut = async {
        let (conn, handle) = netlink_here()?;
        let Some(index) = find_link(&handle, host_if).await? else {
            return Ok(None);
        };
        match handle
            .link()
            .set(LinkUnspec::new_with_index(index).down().build())
            .execute()
            .await
        {
            Ok(()) => Ok(Some((conn, handle, index))),
            Err(e) if is_errno(&e, nix::errno::Errno::ENODEV) => Ok(None),
            Err(e) => Err(netlink_error(format!("set {host_if} down"))(e)),
        }
    }
    .await?;
    let own = tag(life);
    let delete = async {
        match cut {
            Some((_conn, handle, index)) if delete_link => {
                delete_index(&handle, index, host_if).await
            }
            _ => Ok(false),
        }
    };
    let (link, rules) = tokio::join!(delete, firewall.remove_exactly(rules, |c| c == own));
    link.and(rules).map(|_| ())
}

/// The index of the link called `name`, if there is one.
async fn find_link(handle: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(l) => Ok(l.map(|l| l.header.index)),
        Err(e) if is_errno(&e, nix::errno::Errno::ENODEV) => Ok(None),
        Err(e) => Err(netlink_error(format!("look up {name}"))(e)),
    }
}

/// Deletes link `index` (called `name`); true when it was still there.
async fn delete_index(handle: &Handle, index: u32, name: &str) -> Result<bool, NetError> {
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(true),
        // Freed with the life's namespace meanwhile.
        Err(e) if is_errno(&e, nix::errno::Errno::ENODEV) => Ok(false),
        Err(e) => Err(netlink_error(format!("delete {name}"))(e)),
    }
}

/// Removes every rule tagged with any life and every `vlife<n>` link from the calling thread's
/// network namespace: what a sysrunner that died without teardown left in a namespace that
/// outlived it (a Kubernetes pod's). Call it once at start, before the first life; it would cut
/// off a running one. Returns how many rules and links it removed.
pub async fn sweep<C: Commands>(iptables: Iptables, commands: &C) -> Result<usize, NetError> {
    let firewall = Firewall::find(iptables, commands.clone())?;
    let (_conn, handle) = netlink_here()?;
    let removed = netops::delete_links_where(&handle, any_life_link)
        .await
        .map_err(netlink_error(
            "remove the links a sysrunner before this one left",
        ))?
        .len();
    Ok(removed + firewall.remove(any_life).await?)
}

/// The life's rules, in the container's namespace before the life exists (they name its link
/// before there is one): the first half of [`setup`], which can run while the life is being
/// built. [`Rules::connect`] makes the rest; [`Rules::undo`] takes them out again.
#[must_use = "the life's rules stay in the container's namespace until connect or undo"]
pub struct Rules<C: Commands = Reaper> {
    guard: Guard<C>,
}

/// Checks that the life's link is free and inserts the life's rules. Works in the calling
/// thread's network namespace, the container's.
pub async fn prepare<C: Commands>(
    plan: &Plan,
    iptables: Iptables,
    commands: &C,
) -> Result<Rules<C>, NetError> {
    let firewall = Firewall::find(iptables, commands.clone())?;
    let (_conn, host) = netlink_here()?;
    // A link of this name belongs to another setup of the same life number, or to a sysrunner
    // that died before it tore down: undoing a failed setup here would tear down that one.
    if find_link(&host, &plan.host_if).await?.is_some() {
        return Err(NetError::LinkExists {
            name: plan.host_if.clone(),
        });
    }
    forwarding_on()?;
    let guard = Guard {
        life: plan.life,
        host_if: plan.host_if.clone(),
        rules: plan.rules(),
        firewall,
        armed: true,
    };
    // The rules first: they are in place before the life can send its first packet.
    match guard.firewall.insert(&guard.rules).await {
        Ok(()) => Ok(Rules { guard }),
        Err(e) => {
            // iptables-restore commits table by table: one may be in.
            if let Err(undo) = guard.teardown().await {
                tracing::warn!(
                    life = plan.life,
                    "undoing a failed network setup failed too: {undo}"
                );
            }
            Err(e)
        }
    }
}

impl<C: Commands> Rules<C> {
    /// Joins the life whose init is `life_pid` (a process that has its own network namespace
    /// already) to the container's namespace as `plan` says; the life's side is configured
    /// through a netlink socket made in the life's namespace by a thread of its own. On failure,
    /// removes the rules and what it made before returning the error.
    pub async fn connect(self, plan: &Plan, life_pid: i32) -> Result<Guard<C>, NetError> {
        let made = async {
            let life_ns = open_life_netns(life_pid)?;
            let (_conn, host) = netlink_here()?;
            configure(plan, &host, &life_ns).await
        };
        match made.await {
            Ok(()) => Ok(self.guard),
            Err(e) => {
                if let Err(undo) = self.guard.teardown().await {
                    tracing::warn!(
                        life = plan.life,
                        "undoing a failed network setup failed too: {undo}"
                    );
                }
                Err(e)
            }
        }
    }

    /// Removes the rules again (the life was never built).
    pub async fn undo(self) -> Result<(), NetError> {
        self.guard.teardown().await
    }
}

/// Makes the life's network as `plan` says, for the life whose init is `life_pid`: [`prepare`],
/// then [`Rules::connect`].
pub async fn setup<C: Commands>(
    plan: &Plan,
    life_pid: i32,
    iptables: Iptables,
    commands: &C,
) -> Result<Guard<C>, NetError> {
    prepare(plan, iptables, commands)
        .await?
        .connect(plan, life_pid)
        .await
}

/// `/proc/<pid>/ns/net`, refused when it is the calling thread's own namespace.
fn open_life_netns(pid: i32) -> Result<File, NetError> {
    let ns_err = |source| NetError::Namespace { pid, source };
    let life = File::open(format!("/proc/{pid}/ns/net")).map_err(ns_err)?;
    let here = std::fs::metadata("/proc/thread-self/ns/net").map_err(ns_err)?;
    let there = life.metadata().map_err(ns_err)?;
    if (here.dev(), here.ino()) == (there.dev(), there.ino()) {
        return Err(NetError::SharedNamespace { pid });
    }
    Ok(life)
}

async fn configure(plan: &Plan, host: &Handle, life_ns: &File) -> Result<(), NetError> {
    // The life end is made in the life's namespace, under its final name, in the same request:
    // it never exists in the container's namespace, where an `eth0` is already taken.
    let peer = LinkUnspec::new_with_name(&plan.life_if)
        .mtu(plan.mtu)
        .setns_by_fd(life_ns.as_raw_fd())
        .build();
    let pair = LinkVeth::new(&plan.host_if, &plan.life_if)
        .mtu(plan.mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    host.link()
        .add(pair)
        .execute()
        .await
        .map_err(netlink_error(format!(
            "create the veth pair {} / {} (life {})",
            plan.host_if, plan.life_if, plan.life
        )))?;
    let host_index = link_index(host, &plan.host_if).await?;
    let conf = |family: &str, name: &str| {
        PathBuf::from(format!(
            "/proc/sys/net/{family}/conf/{}/{name}",
            plan.host_if
        ))
    };
    // Before the link is up, so that it never gets a link-local IPv6 address (see the module doc).
    write_sysctl(&conf("ipv6", "disable_ipv6"), "1", true)?;
    write_sysctl(&conf("ipv4", "proxy_arp"), "1", false)?;
    write_sysctl(
        &PathBuf::from(format!(
            "/proc/sys/net/ipv4/neigh/{}/proxy_delay",
            plan.host_if
        )),
        "0",
        false,
    )?;
    host.address()
        .add(host_index, IpAddr::V4(plan.host_addr), plan.prefix)
        .execute()
        .await
        .map_err(netlink_error(format!(
            "add {}/{} to {}",
            plan.host_addr, plan.prefix, plan.host_if
        )))?;
    set_up(host, host_index, &plan.host_if).await?;

    let (_life_conn, life) = netlink_in(life_ns).await?;
    let lo = link_index(&life, "lo").await?;
    set_up(&life, lo, "lo in the life").await?;
    let life_index = link_index(&life, &plan.life_if).await?;
    life.address()
        .add(life_index, IpAddr::V4(plan.life_addr), plan.prefix)
        .execute()
        .await
        .map_err(netlink_error(format!(
            "add {}/{} to {} in the life",
            plan.life_addr, plan.prefix, plan.life_if
        )))?;
    // Up before the routes: the kernel refuses a route through a link that is down (ENETDOWN).
    set_up(&life, life_index, &plan.life_if).await?;
    let default = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(plan.host_addr)
        .output_interface(life_index)
        .build();
    life.route()
        .add(default)
        .execute()
        .await
        .map_err(netlink_error(format!(
            "add the life's default route via {}",
            plan.host_addr
        )))?;
    for net in &plan.extra_routes {
        let on_link = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(net.network(), net.prefix_len())
            .output_interface(life_index)
            .scope(RouteScope::Link)
            .build();
        life.route()
            .add(on_link)
            .execute()
            .await
            .map_err(netlink_error(format!(
                "add the on-link route {net} in the life"
            )))?;
    }
    Ok(())
}

/// `ip_forward` on in the calling thread's namespace, written only when it is off.
fn forwarding_on() -> Result<(), NetError> {
    let path = Path::new("/proc/sys/net/ipv4/ip_forward");
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    write_sysctl(path, "1", false)
}

/// Writes a sysctl of the calling thread's namespace; `optional`: a missing file is no error
/// (IPv6 disabled at boot has no `ipv6/conf`, and then nothing to switch off).
fn write_sysctl(path: &Path, value: &'static str, optional: bool) -> Result<(), NetError> {
    match std::fs::write(path, value) {
        Err(e) if optional && e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r.map_err(|source| NetError::Sysctl {
            path: path.to_owned(),
            value,
            source,
        }),
    }
}

async fn link_index(handle: &Handle, name: &str) -> Result<u32, NetError> {
    find_link(handle, name).await?.ok_or_else(|| NetError::Io {
        what: format!("find {name}"),
        source: io::ErrorKind::NotFound.into(),
    })
}

async fn set_up(handle: &Handle, index: u32, what: &str) -> Result<(), NetError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink_error(format!("set {what} up")))
}

/// A netlink connection in the calling thread's network namespace.
fn netlink_here() -> Result<(Connection, Handle), NetError> {
    netops::netlink_here().map_err(|source| NetError::Io {
        what: "open a netlink socket".into(),
        source,
    })
}

/// A netlink connection in the namespace `ns`. A socket belongs to the network namespace it was
/// made in, whatever thread uses it later; so a thread of its own enters `ns`
/// (`setns(CLONE_NEWNET)` changes only the calling thread), makes the socket registered with the
/// caller's runtime, and ends. Never a thread of tokio's blocking pool: it would stay in `ns`
/// and run other work there.
async fn netlink_in(ns: &File) -> Result<(Connection, Handle), NetError> {
    use rtnetlink::sys::{AsyncSocket, TokioSocket, protocols::NETLINK_ROUTE};
    let io_err = |what: &str| {
        let what = what.to_owned();
        move |source| NetError::Io { what, source }
    };
    let ns = ns
        .try_clone()
        .map_err(io_err("keep the life's namespace open"))?;
    let runtime = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sysrunner-life-netns".into())
        .spawn(move || {
            let socket = nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)
                .and_then(|()| {
                    let _entered = runtime.enter();
                    TokioSocket::new(NETLINK_ROUTE)
                });
            let _ = tx.send(socket);
        })
        .map_err(io_err("start a thread for the life's namespace"))?;
    let socket = rx
        .await
        .map_err(|_| io::Error::other("the thread ended without an answer"))
        .and_then(|r| r)
        .map_err(io_err("open a netlink socket in the life's namespace"))?;
    let (conn, handle, _) = rtnetlink::from_socket(socket);
    Ok((Connection(tokio::spawn(conn)), handle))
}

fn netlink_error(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Netlink {
        what,
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests;
