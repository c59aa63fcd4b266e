//! Changes to the firewall and the links of the calling thread's network namespace, made the way
//! both the life's network (`sandbox::net`) and the removal of an earlier dockerd's leftovers
//! (`dockerd::leftovers`) make them: rules out of one `iptables-save` and in through one
//! `iptables-restore --noflush` per change (one process instead of one per rule: with iptables-nft
//! each process took 10 to 15 ms on this machine, and each table's changes commit at once), links
//! over rtnetlink. Owns no rule and no link: what to change is the caller's decision.

use crate::process::Commands;
use crate::reaper::ExitStatus;
use futures_util::TryStreamExt;
use rtnetlink::Handle;
use rtnetlink::packet_route::link::LinkAttribute;
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::process::Command;

/// How long `iptables-restore` waits for the xtables lock (`-w`), in seconds: another process
/// (dockerd, a life's teardown) may be changing the tables at the same moment.
pub const XTABLES_WAIT_SECONDS: &str = "10";

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("{binary} is not on PATH")]
    Missing { binary: String },
    #[error("cannot run {command}: {source}")]
    Io { command: String, source: io::Error },
    #[error("{command} failed ({status}): {stderr}; its input was:\n{input}")]
    Failed {
        command: String,
        input: String,
        status: ExitStatus,
        stderr: String,
    },
}

/// Which tables: IPv4's (`iptables`) or IPv6's (`ip6tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// One backend's save and restore for one family, and how to run them.
#[derive(Clone)]
pub struct Firewall<C> {
    save: PathBuf,
    restore: PathBuf,
    commands: C,
}

impl<C: Commands> Firewall<C> {
    /// `iptables-legacy-*` or `iptables-nft-*` (or the `ip6tables` ones) from PATH, `backend`
    /// being `legacy` or `nft`: the backend the inner dockerd was set up with, so that both speak
    /// to the same tables.
    pub fn find(backend: &str, family: Family, commands: C) -> Result<Self, FirewallError> {
        let find = |tool: &str| {
            let name = format!("{}-{backend}-{tool}", family.tool());
            which::which(&name).map_err(|_| FirewallError::Missing { binary: name })
        };
        Ok(Firewall {
            save: find("save")?,
            restore: find("restore")?,
            commands,
        })
    }

    async fn run(
        &self,
        binary: &PathBuf,
        args: &[&str],
        stdin: String,
    ) -> Result<String, FirewallError> {
        let command = format!("{} {}", binary.display(), args.join(" "));
        let mut cmd = Command::new(binary);
        cmd.args(args);
        let out = self
            .commands
            .output(cmd, stdin.clone().into_bytes())
            .await
            .map_err(|source| FirewallError::Io {
                command: command.clone(),
                source,
            })?;
        if out.status != ExitStatus::Code(0) {
            return Err(FirewallError::Failed {
                command,
                input: stdin,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The tables as `iptables-save` prints them.
    pub async fn dump(&self) -> Result<String, FirewallError> {
        let save = self.save.clone();
        self.run(&save, &[], String::new()).await
    }

    /// Applies an `iptables-restore --noflush` script: each table's lines commit together, or
    /// not at all.
    pub async fn apply(&self, script: String) -> Result<(), FirewallError> {
        let restore = self.restore.clone();
        self.run(&restore, &["-w", XTABLES_WAIT_SECONDS, "--noflush"], script)
            .await
            .map(|_| ())
    }

    /// Deletes every rule `select` picks (its table and its words after `-A`); how many went.
    pub async fn remove_where(
        &self,
        select: impl Fn(&str, &[&str]) -> bool,
    ) -> Result<usize, FirewallError> {
        let doomed = deletions_where(&self.dump().await?, select);
        let count = doomed.values().map(Vec::len).sum();
        if count > 0 {
            self.apply(restore_script(doomed)).await?;
        }
        Ok(count)
    }
}

/// The `-D <chain> <spec…>` lines, per table, for the rules of an `iptables-save` dump that
/// `select` picks, given the table and the rule's words (`<chain> <spec…>`). iptables reads back
/// what it saves.
pub fn deletions_where(
    dump: &str,
    select: impl Fn(&str, &[&str]) -> bool,
) -> BTreeMap<String, Vec<String>> {
    let mut by_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut table = None;
    for line in dump.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = Some(name.trim().to_owned());
            continue;
        }
        let Some(rule) = line.strip_prefix("-A ") else {
            continue;
        };
        let words: Vec<&str> = rule.split_whitespace().collect();
        if let Some(t) = &table {
            if select(t, &words) {
                by_table
                    .entry(t.clone())
                    .or_default()
                    .push(format!("-D {}", words.join(" ")));
            }
        }
    }
    by_table
}

/// An `iptables-restore` script: each table's lines, then `COMMIT`.
pub fn restore_script<T: AsRef<str>>(by_table: BTreeMap<T, Vec<String>>) -> String {
    let mut script = String::new();
    for (table, lines) in by_table {
        script.push_str(&format!("*{}\n", table.as_ref()));
        for l in lines {
            script.push_str(&l);
            script.push('\n');
        }
        script.push_str("COMMIT\n");
    }
    script
}

/// A netlink connection whose task ends when this is dropped.
pub struct Connection(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A netlink connection in the calling thread's network namespace.
pub fn netlink_here() -> io::Result<(Connection, Handle)> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    Ok((Connection(tokio::spawn(conn)), handle))
}

/// Deletes every link of the namespace `handle` speaks to whose name `select` picks; the names
/// of those it deleted. A link gone meanwhile is not an error.
pub async fn delete_links_where(
    handle: &Handle,
    select: impl Fn(&str) -> bool,
) -> Result<Vec<String>, rtnetlink::Error> {
    let links: Vec<_> = handle.link().get().execute().try_collect().await?;
    let mut deleted = Vec::new();
    for l in links {
        let name = l.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        let Some(name) = name.filter(|n| select(n)) else {
            continue;
        };
        match handle.link().del(l.header.index).execute().await {
            Ok(()) => deleted.push(name),
            Err(e) if is_errno(&e, nix::errno::Errno::ENODEV) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// The names of the bridges that have a port (a link whose controller they are).
pub async fn bridges_with_ports(handle: &Handle) -> Result<Vec<String>, rtnetlink::Error> {
    let links: Vec<_> = handle.link().get().execute().try_collect().await?;
    let controllers: Vec<u32> = links
        .iter()
        .filter_map(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Controller(i) => Some(*i),
                _ => None,
            })
        })
        .collect();
    Ok(links
        .iter()
        .filter(|l| controllers.contains(&l.header.index))
        .filter_map(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
        })
        .collect())
}

pub fn is_errno(e: &rtnetlink::Error, errno: nix::errno::Errno) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -(errno as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "# Generated by iptables-save\n*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 10.0.0.0/30 -j MASQUERADE\n-A POSTROUTING -o eth0 -j ACCEPT\nCOMMIT\n*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -i eth0 -j ACCEPT\nCOMMIT\n";

    #[test]
    fn deletions_name_the_table_and_the_rule_as_saved() {
        let d = deletions_where(DUMP, |_, w| w.contains(&"eth0"));
        assert_eq!(
            restore_script(d),
            "*filter\n-D FORWARD -i eth0 -j ACCEPT\nCOMMIT\n*nat\n-D POSTROUTING -o eth0 -j ACCEPT\nCOMMIT\n"
        );
        let nat_only = deletions_where(DUMP, |t, _| t == "nat");
        assert_eq!(nat_only.len(), 1);
        assert_eq!(nat_only["nat"].len(), 2);
        assert!(deletions_where(DUMP, |_, _| false).is_empty());
        assert!(deletions_where("", |_, _| true).is_empty());
    }
}
