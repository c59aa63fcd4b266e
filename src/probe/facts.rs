//! Facts about the runtime, read through a root path: `/` in production, a captured tree in tests.
//! Reads only, and judges nothing (that is `verdict`'s). Every reader tolerates a missing file (a
//! fact it cannot read stays `None`/empty), because a captured tree or an odd runtime may lack any
//! of them. What each fact tells apart: docs/runtimes.md.

use super::mountinfo::{self, Mount};
use serde::Serialize;
use std::fs;
use std::path::Path;

/// The initial user namespace's inode (`/proc/self/ns/user` on a host or in a privileged container).
pub const INITIAL_USER_NS: u64 = 0xEFFF_FFFD;
/// The initial pid namespace's inode: seen only on a host, never in a container.
pub const INITIAL_PID_NS: u64 = 0xEFFF_FFFC;
/// Where dockerd keeps its data.
pub const DATA_ROOT: &str = "/var/lib/docker";

#[derive(Debug, Clone, Default, Serialize)]
pub struct Facts {
    pub euid: Option<u32>,
    pub caps: Caps,
    pub user_namespace: UserNamespace,
    pub pid_namespace: PidNamespace,
    /// sysboxfs FUSE mounts; read-only ones mean sysbox runs in restricted mode.
    pub sysboxfs: Vec<SysboxMount>,
    pub cgroup: Cgroup,
    pub data_root: DataRoot,
    pub dev_fuse: bool,
    /// Tables listed in `/proc/net/ip_tables_names` and `ip6_tables_names`: any means the legacy
    /// iptables backend is in use.
    pub iptables_legacy_tables: Vec<String>,
    pub seccomp: Option<u32>,
    pub no_new_privs: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Caps {
    #[serde(serialize_with = "hex")]
    pub effective: u64,
    #[serde(serialize_with = "hex")]
    pub bounding: u64,
    #[serde(serialize_with = "hex")]
    pub inheritable: u64,
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:016x}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IdRange {
    pub inside: u64,
    pub outside: u64,
    pub count: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UserNamespace {
    /// `Some(true)`: the initial user namespace (host, privileged container).
    pub initial: Option<bool>,
    pub inode: Option<u64>,
    pub uid_map: Vec<IdRange>,
    pub gid_map: Vec<IdRange>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PidNamespace {
    /// `Some(true)`: the initial pid namespace, i.e. a host.
    pub initial: Option<bool>,
    pub inode: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SysboxMount {
    pub mount_point: String,
    pub rw: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Cgroup {
    pub version: Option<CgroupVersion>,
    /// Our cgroup: the `0::` line on v2; the pids (else first) controller's path on v1.
    pub path: Option<String>,
    /// Every cgroupfs mount under `/sys/fs/cgroup` is writable.
    pub rw: bool,
    pub controllers: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DataRoot {
    pub path: String,
    /// Filesystem type of the mount the data root lives on (`ext4`, `overlay`, …).
    pub fstype: Option<String>,
}

const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "rdma",
    "misc",
];

fn read(root: &Path, rel: &str) -> Option<String> {
    fs::read_to_string(root.join(rel)).ok()
}

/// The inode in a namespace link such as `user:[4026531837]`.
fn ns_inode(root: &Path, rel: &str) -> Option<u64> {
    let target = fs::read_link(root.join(rel)).ok()?;
    let t = target.to_str()?;
    let inner = t.split_once(":[")?.1.strip_suffix(']')?;
    inner.parse().ok()
}

fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

pub fn parse_id_map(text: &str) -> Vec<IdRange> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(|x| x.parse::<u64>());
            Some(IdRange {
                inside: f.next()?.ok()?,
                outside: f.next()?.ok()?,
                count: f.next()?.ok()?,
            })
        })
        .collect()
}

/// The identity map of the initial user namespace.
fn is_identity_map(map: &[IdRange]) -> bool {
    matches!(
        map,
        [IdRange {
            inside: 0,
            outside: 0,
            count: 4294967295
        }]
    )
}

/// Reads every fact below `root`. Never fails: what cannot be read is reported as unknown.
pub fn read_facts(root: &Path) -> Facts {
    let status = read(root, "proc/self/status").unwrap_or_default();
    let cap = |k| {
        status_field(&status, k)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0)
    };
    let mounts = mountinfo::parse(&read(root, "proc/self/mountinfo").unwrap_or_default());

    let uid_map = parse_id_map(&read(root, "proc/self/uid_map").unwrap_or_default());
    let gid_map = parse_id_map(&read(root, "proc/self/gid_map").unwrap_or_default());
    let user_inode = ns_inode(root, "proc/self/ns/user");
    let user_initial = match user_inode {
        Some(i) => Some(i == INITIAL_USER_NS),
        None if uid_map.is_empty() => None,
        None => Some(is_identity_map(&uid_map)),
    };
    let pid_inode = ns_inode(root, "proc/self/ns/pid");

    let mut tables: Vec<String> = ["proc/net/ip_tables_names", "proc/net/ip6_tables_names"]
        .iter()
        .filter_map(|p| read(root, p))
        .flat_map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    tables.sort();
    tables.dedup();

    Facts {
        euid: status_field(&status, "Uid")
            .and_then(|v| v.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok()),
        caps: Caps {
            effective: cap("CapEff"),
            bounding: cap("CapBnd"),
            inheritable: cap("CapInh"),
        },
        user_namespace: UserNamespace {
            initial: user_initial,
            inode: user_inode,
            uid_map,
            gid_map,
        },
        pid_namespace: PidNamespace {
            initial: pid_inode.map(|i| i == INITIAL_PID_NS),
            inode: pid_inode,
        },
        sysboxfs: mounts
            .iter()
            .filter(|m| m.source == "sysboxfs" && m.fstype.starts_with("fuse"))
            .map(|m| SysboxMount {
                mount_point: m.mount_point.clone(),
                rw: m.rw,
            })
            .collect(),
        cgroup: cgroup(root, &mounts),
        data_root: DataRoot {
            path: DATA_ROOT.to_string(),
            fstype: mountinfo::mount_of(&mounts, DATA_ROOT).map(|m| m.fstype.clone()),
        },
        dev_fuse: root.join("dev/fuse").exists(),
        iptables_legacy_tables: tables,
        seccomp: status_field(&status, "Seccomp").and_then(|v| v.parse().ok()),
        no_new_privs: status_field(&status, "NoNewPrivs").map(|v| v == "1"),
    }
}

fn cgroup(root: &Path, mounts: &[Mount]) -> Cgroup {
    let own = read(root, "proc/self/cgroup").unwrap_or_default();
    let under = |m: &&Mount| {
        m.mount_point == "/sys/fs/cgroup" || m.mount_point.starts_with("/sys/fs/cgroup/")
    };
    let v2 = mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == "/sys/fs/cgroup" && m.fstype == "cgroup2");
    let v1: Vec<&Mount> = mounts
        .iter()
        .filter(under)
        .filter(|m| m.fstype == "cgroup")
        .collect();
    if let Some(m) = v2 {
        let controllers = read(root, "sys/fs/cgroup/cgroup.controllers")
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect();
        Cgroup {
            version: Some(CgroupVersion::V2),
            path: own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(String::from),
            rw: m.rw,
            controllers,
        }
    } else if !v1.is_empty() {
        let mut controllers: Vec<String> = v1
            .iter()
            .flat_map(|m| m.super_options.iter())
            .filter(|o| V1_CONTROLLERS.contains(&o.as_str()))
            .cloned()
            .collect();
        controllers.sort();
        controllers.dedup();
        let line_path = |ctrl: &str| {
            own.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, c, p) = (f.next()?, f.next()?, f.next()?);
                c.split(',').any(|x| x == ctrl).then(|| p.to_string())
            })
        };
        Cgroup {
            version: Some(CgroupVersion::V1),
            path: line_path("pids").or_else(|| line_path("memory")),
            rw: v1.iter().all(|m| m.rw),
            controllers,
        }
    } else {
        Cgroup::default()
    }
}

/// The files `read_facts` reads, copied into `dest` so a probe can be replayed with `--root`:
/// what a user attaches to a bug report, and how the fixtures in `tests/fixtures/probe` were made.
pub fn capture(root: &Path, dest: &Path) -> std::io::Result<Vec<String>> {
    let files = [
        "proc/self/status",
        "proc/self/mountinfo",
        "proc/self/uid_map",
        "proc/self/gid_map",
        "proc/self/cgroup",
        "proc/net/ip_tables_names",
        "proc/net/ip6_tables_names",
        "sys/fs/cgroup/cgroup.controllers",
    ];
    let mut copied = Vec::new();
    for rel in files {
        if let Ok(text) = fs::read_to_string(root.join(rel)) {
            let to = dest.join(rel);
            fs::create_dir_all(to.parent().expect("relative path has a parent"))?;
            fs::write(&to, text)?;
            copied.push(rel.to_string());
        }
    }
    for rel in ["proc/self/ns/user", "proc/self/ns/pid"] {
        if let Ok(target) = fs::read_link(root.join(rel)) {
            let to = dest.join(rel);
            fs::create_dir_all(to.parent().expect("relative path has a parent"))?;
            let _ = fs::remove_file(&to);
            std::os::unix::fs::symlink(target, &to)?;
            copied.push(rel.to_string());
        }
    }
    if root.join("dev/fuse").exists() {
        fs::create_dir_all(dest.join("dev"))?;
        fs::write(dest.join("dev/fuse"), "")?;
        copied.push("dev/fuse".into());
    }
    Ok(copied)
}
