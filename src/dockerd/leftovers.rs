//! What an earlier dockerd left in the network namespace this one will run in: its iptables chains
//! and the rules that jump to them, its default bridge `docker0` and the `br-…` bridges of the
//! networks jobs made. A namespace outlives a life where a Kubernetes pod holds it (a container
//! restarted in its pod keeps the pod's network) and a life runs without its own (LIFE_SANDBOX=off);
//! Docker gives a restarted container a new one, and so does the life sandbox.
//!
//! Left there, they cost twice. dockerd deletes its old chains itself, one `iptables` process per
//! rule, and with iptables-nft deleting a chain that still has rules is slow: a dockerd started
//! where one had run took 440–500 ms to answer instead of 310–330 ms (this machine, five
//! interleaved pairs, containerd first); the same chains removed in one `iptables-restore`
//! transaction take 25–35 ms. And the bridges of the networks a job made stay behind with their
//! on-link routes when the data root is emptied: a dockerd that no longer knows them avoids their
//! subnets, so a pod running many lives would run out of address pools.
//!
//! Owns the decision of what is dockerd's ([`removal_script`], [`is_dockerds_link`]) and its
//! removal ([`remove`]); call it before dockerd starts, never while one runs (it would cut off its
//! containers). Leaves alone what Docker itself puts in a container's namespace (its embedded
//! DNS's `DOCKER_OUTPUT` and `DOCKER_POSTROUTING` chains: underscores, not dockerd's hyphens), the
//! user's `DOCKER-USER` chain, rules naming a bridge outside `FORWARD` and `POSTROUTING`, and a
//! bridge that still has ports (a namespace shared with a Docker whose containers run).

use super::plan::Iptables;
use crate::netops::{self, Family, Firewall, FirewallError};
use crate::process::{BoxFut, Commands};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// dockerd's own chains: `DOCKER` and every `DOCKER-…` (`-ISOLATION-STAGE-1`, and the ones newer
/// releases add: `-FORWARD`, `-BRIDGE`, `-CT`, `-INTERNAL`, `-INGRESS`), except `DOCKER-USER`:
/// that one is the user's (Docker's documented place for rules of one's own, such as a DROP of
/// the cloud's metadata address that an init container adds); dockerd keeps it, and so does
/// this.
pub fn is_dockerds_chain(name: &str) -> bool {
    (name == "DOCKER" || name.starts_with("DOCKER-")) && name != USER_CHAIN
}

const USER_CHAIN: &str = "DOCKER-USER";

/// The built-in chains where dockerd writes rules naming its bridges (`FORWARD`'s accepts and
/// drops, `POSTROUTING`'s masquerade): a rule naming a bridge elsewhere is somebody else's.
const BRIDGE_RULE_CHAINS: [&str; 2] = ["FORWARD", "POSTROUTING"];

/// dockerd's bridges: the default `docker0`, and `br-` with the first 12 hex digits of a
/// network's id for every other bridge network.
pub fn is_dockerds_link(name: &str) -> bool {
    name == "docker0"
        || name
            .strip_prefix("br-")
            .is_some_and(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `iptables-restore --noflush` script that removes an earlier dockerd's rules from an
/// `iptables-save` dump, table by table: first every rule of another chain that jumps or goes to
/// one of dockerd's chains, and every rule of `FORWARD` or `POSTROUTING` that names one of its
/// bridges (`-i`, `-o`), then dockerd's chains, flushed and deleted. `DOCKER-USER` and its rules
/// stay (see [`is_dockerds_chain`]). `None` when the dump has none of them.
pub fn removal_script(dump: &str) -> Option<String> {
    let mut chains: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut table = None;
    for line in dump.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = Some(name.trim().to_owned());
        } else if let (Some(t), Some(decl)) = (&table, line.strip_prefix(':')) {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if is_dockerds_chain(name) {
                chains.entry(t.clone()).or_default().insert(name.to_owned());
            }
        }
    }
    let mut by_table = netops::deletions_where(dump, |_, words| {
        let (chain, spec) = words.split_first().unwrap_or((&"", &[]));
        !is_dockerds_chain(chain)
            && *chain != USER_CHAIN
            && spec.windows(2).any(|w| match w[0] {
                "-j" | "-g" => is_dockerds_chain(w[1]),
                "-i" | "-o" => BRIDGE_RULE_CHAINS.contains(chain) && is_dockerds_link(w[1]),
                _ => false,
            })
    });
    for (t, names) in &chains {
        let lines = by_table.entry(t.clone()).or_default();
        lines.extend(names.iter().map(|c| format!("-F {c}")));
        lines.extend(names.iter().map(|c| format!("-X {c}")));
    }
    if by_table.is_empty() {
        None
    } else {
        Some(netops::restore_script(by_table))
    }
}

/// What [`remove`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Lines of the removal scripts applied (rules deleted, chains flushed and deleted), IPv4
    /// and IPv6 together.
    pub changes: usize,
    pub links: Vec<String>,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.changes == 0 && self.links.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeftoverError {
    #[error("cannot remove an earlier dockerd's rules: {0}")]
    Firewall(#[from] FirewallError),
    #[error("cannot remove an earlier dockerd's bridges: {0}")]
    Links(String),
}

/// Removes an earlier dockerd's rules (IPv4, and IPv6 where the backend's `ip6tables` is there)
/// and bridges from the calling thread's network namespace, the rules and the links at once.
pub async fn remove<C: Commands>(
    backend: Iptables,
    commands: &C,
) -> Result<Removed, LeftoverError> {
    let rules = async {
        let mut changes = 0;
        for family in [Family::V4, Family::V6] {
            let fw = match Firewall::find(backend.as_str(), family, commands.clone()) {
                Ok(fw) => fw,
                // An image without ip6tables has no IPv6 rules of dockerd's either; one without
                // the backend at all has none of either (dockerd would not start there).
                Err(FirewallError::Missing { .. }) => continue,
                Err(e) => return Err(LeftoverError::from(e)),
            };
            if let Some(script) = removal_script(&fw.dump().await?) {
                changes += script
                    .lines()
                    .filter(|l| !l.starts_with('*') && *l != "COMMIT")
                    .count();
                fw.apply(script).await?;
            }
        }
        Ok(changes)
    };
    let links = async {
        let (_conn, handle) =
            netops::netlink_here().map_err(|e| LeftoverError::Links(e.to_string()))?;
        let in_use = netops::bridges_with_ports(&handle)
            .await
            .map_err(|e| LeftoverError::Links(e.to_string()))?;
        // A bridge with ports belongs to a dockerd whose containers run (a namespace shared
        // with the host's own Docker): never ours to delete.
        netops::delete_links_where(&handle, |n| {
            is_dockerds_link(n) && !in_use.iter().any(|u| u == n)
        })
        .await
        .map_err(|e| LeftoverError::Links(e.to_string()))
    };
    let (changes, links) = tokio::join!(rules, links);
    Ok(Removed {
        changes: changes?,
        links: links?,
    })
}

/// [`remove`] for [`super::Beside::sweep`], logged: what went at info, a failure as a warning
/// (dockerd then deletes its old rules itself, more slowly).
pub fn sweep<C: Commands>(backend: Iptables, commands: C) -> BoxFut<'static, ()> {
    Box::pin(async move {
        let started = Instant::now();
        // Bounded: iptables waits up to 10 s for a held xtables lock, and dockerd's start waits
        // for this.
        let removed = tokio::time::timeout(SWEEP_LIMIT, remove(backend, &commands))
            .await
            .unwrap_or_else(|_| {
                Err(LeftoverError::Links(format!(
                    "gave up after {SWEEP_LIMIT:?}"
                )))
            });
        match removed {
            Ok(r) if r.is_empty() => {}
            Ok(r) => tracing::info!(
                took_ms = started.elapsed().as_millis() as u64,
                "removed what an earlier dockerd left in this network namespace: {} rule and chain changes, links {}",
                r.changes,
                if r.links.is_empty() {
                    "none".to_owned()
                } else {
                    r.links.join(", ")
                }
            ),
            Err(e) => tracing::warn!("{e}; dockerd deletes its old rules itself, more slowly"),
        }
    })
}

/// How long dockerd's start waits for the removal at most.
const SWEEP_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;

    /// What dockerd 26.1 left in a namespace (`iptables-save` after it stopped), with Docker's
    /// embedded DNS rules and a rule of the user's own beside it.
    const AFTER_DOCKERD: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A INPUT -i eth0 -p tcp --dport 22 -j ACCEPT
-A INPUT -i docker0 -p udp --dport 53 -j ACCEPT
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i br-0123456789ab -o br-0123456789ab -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -d 169.254.169.254/32 -j DROP
-A DOCKER-USER -j RETURN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER_OUTPUT - [0:0]
:DOCKER_POSTROUTING - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -d 127.0.0.11/32 -j DOCKER_POSTROUTING
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A DOCKER_OUTPUT -d 127.0.0.11/32 -p udp --dport 53 -j DNAT --to-destination 127.0.0.11:44081
-A DOCKER_POSTROUTING -s 127.0.0.11/32 -p udp --sport 44081 -j SNAT --to-source :53
COMMIT
";

    #[test]
    fn removes_dockerds_chains_and_what_points_at_them_and_keeps_the_rest() {
        let script = removal_script(AFTER_DOCKERD).expect("there is something to remove");
        assert_eq!(
            script,
            "\
*filter
-D FORWARD -j DOCKER-ISOLATION-STAGE-1
-D FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-D FORWARD -o docker0 -j DOCKER
-D FORWARD -i docker0 ! -o docker0 -j ACCEPT
-D FORWARD -i br-0123456789ab -o br-0123456789ab -j ACCEPT
-F DOCKER
-F DOCKER-ISOLATION-STAGE-1
-F DOCKER-ISOLATION-STAGE-2
-X DOCKER
-X DOCKER-ISOLATION-STAGE-1
-X DOCKER-ISOLATION-STAGE-2
COMMIT
*nat
-D PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-D OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-D POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-F DOCKER
-X DOCKER
COMMIT
"
        );
        assert!(!script.contains("DOCKER_OUTPUT") && !script.contains("DOCKER_POSTROUTING"));
        assert!(!script.contains("dport 22") && !script.contains("dport 53"));
        assert!(
            !script.contains("DOCKER-USER"),
            "the user's chain, its rules and the jump to it stay"
        );
    }

    #[test]
    fn nothing_to_remove_where_no_dockerd_ran() {
        let docker_dns_only: String = AFTER_DOCKERD
            .lines()
            .filter(|l| {
                !l.contains("DOCKER ")
                    && !l.contains("DOCKER-")
                    && !l.contains("docker0")
                    && !l.contains("br-")
                    && !l.ends_with("DOCKER")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(docker_dns_only.contains("DOCKER_OUTPUT"));
        assert_eq!(removal_script(&docker_dns_only), None);
        assert_eq!(removal_script(""), None);
    }

    #[test]
    fn dockerds_names() {
        for c in ["DOCKER", "DOCKER-ISOLATION-STAGE-2", "DOCKER-FORWARD"] {
            assert!(is_dockerds_chain(c), "{c}");
        }
        for c in [
            "DOCKER-USER",
            "DOCKER_OUTPUT",
            "DOCKER_POSTROUTING",
            "DOCKERX",
            "FORWARD",
            "",
        ] {
            assert!(!is_dockerds_chain(c), "{c}");
        }
        for l in ["docker0", "br-0123456789ab", "br-abcdefABCDEF"] {
            assert!(is_dockerds_link(l), "{l}");
        }
        for l in [
            "docker1",
            "br-lan",
            "br-0123456789abc",
            "br-0123456789ag",
            "eth0",
            "vlife3",
        ] {
            assert!(!is_dockerds_link(l), "{l}");
        }
    }
}
