//! The life's cgroup: where in the container's cgroup tree a life goes ([`plan`], pure), the
//! writes that put it there and take it away again ([`prepare`], [`join`], [`enter_leaf`],
//! [`enable`], [`remove`], all through [`CgroupFs`]), and what the life mounts at its own
//! `/sys/fs/cgroup` ([`inner_mounts`], as data). Owns the `life-<n>` cgroups and sysrunner's
//! `sysrunner` leaf; never sets a limit, never signals a process, never touches a cgroup outside
//! the one sysrunner manages. The namespaces, the life's init and the order of the steps in it are
//! the sandbox core's.
//!
//! # Design
//!
//! Every life runs in a cgroup namespace whose root is a cgroup of the life's own, so that what a
//! job sees and writes under `/sys/fs/cgroup` (dockerd's `/docker/<id>` cgroups, limits, freezing,
//! `cgroup.kill`) stays inside the life, and the life's cgroups go with it. `<C>` below is the
//! cgroup sysrunner manages: the one it sits in, or the parent of the leaf it sits in.
//!
//! One life, in order (sandbox-facts §5 has the kernel rules each step satisfies):
//!
//! 1. [`prepare`] (sysrunner, outside): removes what a crashed earlier life of the same number
//!    left, then on cgroup v2 makes `<C>` hand every controller it has down to its children
//!    (`<C>/cgroup.subtree_control`). The kernel refuses that (EBUSY) while `<C>` holds processes
//!    ("no internal processes", Documentation/admin-guide/cgroup-v2.rst), so on EBUSY every
//!    process of `<C>` moves into the leaf `<C>/sysrunner` and the write is retried, a bounded
//!    number of times, while processes race in: moby's `hack/dind` does the same with `/init`.
//!    The write comes first and the move only on EBUSY, so where `<C>` is already empty (sysbox
//!    keeps the container's processes in `init.scope`) or is the real root (exempt from the rule)
//!    nothing moves. Then it creates `<C>/life-<n>` and its leaf `<C>/life-<n>/init`. On cgroup
//!    v1 there is no such rule: one `<hierarchy>/<C>/life-<n>` per mounted hierarchy, with
//!    `cpuset.cpus`/`cpuset.mems` copied from the parent, because a fresh v1 cpuset is empty and
//!    admits no task (runc and the test kit's boxes copy them for the same reason).
//! 2. [`join`] (the life's first process, single-threaded, before it executes anything): writes
//!    `0` (the writer itself) into every `life-<n>/cgroup.procs`. The caller then unshares
//!    `CLONE_NEWCGROUP`, which roots the namespace at the cgroups it is in, i.e. `life-<n>`.
//! 3. [`enter_leaf`] (the same process, right after the unshare): moves itself into
//!    `life-<n>/init`, so that `life-<n>` holds no process and may enable controllers for its
//!    children (v2; v1 has no leaf and this does nothing). Its descendants (dockerd, the runner,
//!    the job) start there; dockerd's cgroupfs driver makes `/docker` beside it. dockerd's own
//!    plan moves processes into `/init` only when it finds itself at `0::/`; inside the life it is
//!    at `0::/init`, so that step stays off.
//! 4. [`enable`] (sysrunner, after step 3): writes every controller of `life-<n>/cgroup.controllers`
//!    into `life-<n>/cgroup.subtree_control`, retrying on EBUSY for a bounded time.
//! 5. [`inner_mounts`] (inside the life, in its mount namespace, after its fresh sysfs is mounted
//!    on `/sys`): a fresh `cgroup2` on `/sys/fs/cgroup` (v2), or a tmpfs with a fresh mount of each
//!    hierarchy and the container's symlinks (`cpu -> cpu,cpuacct`) (v1). A mount made inside the
//!    namespace shows the namespace's root; the inherited one would still show the container's
//!    whole tree (mountinfo root `/..`) and let a job write outside its life.
//! 6. [`remove`] (sysrunner, after every process of the life is gone): `rmdir` of each life's
//!    cgroup tree, deepest first (iteratively: a job may nest cgroups deeply), retrying on EBUSY
//!    while the kernel finishes releasing dead tasks. Only `rmdir`: killing is the life's init's
//!    business (its death ends the PID namespace).
//!
//! # Why the plan refuses
//!
//! [`plan`] says [`Unavailable`] where the life cannot have a cgroup of its own in every hierarchy
//! that could reach sysrunner: a read-only cgroupfs (Docker's unprivileged default); a mount that
//! shows a tree not containing sysrunner's cgroup (one inherited from another cgroup namespace);
//! and a controller hierarchy (or cgroup v2's `0::`) that `/proc/self/cgroup` lists but the
//! container has not mounted. In that last case the life's namespace root there would be
//! sysrunner's own cgroup, and a job that is root in the container's user namespace may mount the
//! hierarchy inside its cgroup namespace and write that root's `freezer.state`, limits, or (v2)
//! `cgroup.kill`. A named v1 hierarchy (`name=systemd`) has no such files and is only left out.
//! An EBUSY that never clears while `<C>` is emptied is no plan-time fact; [`prepare`] reports it
//! ([`CgroupError::Busy`]).
//!
//! Without `nsdelegate` on the cgroup2 mount (settable only from the initial cgroup namespace) a
//! job can rewrite `life-<n>`'s own interface files; sysrunner puts no limits there, so that gives
//! the job nothing beyond its own life.

use crate::probe::{CgroupVersion, Facts};
use nix::errno::Errno;
use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Where the container's cgroup file systems are, and where the life's go.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The life's leaf below its namespace root (v2). moby's `hack/dind` uses the same name.
pub const LIFE_LEAF: &str = "init";
/// sysrunner's own leaf below `<C>` when `<C>` must be emptied (v2).
pub const SYSRUNNER_LEAF: &str = "sysrunner";
/// Leaves sysrunner may already sit in; `<C>` is then their parent. `init.scope`: sysbox puts a
/// container's processes there on v2 (nestybox/sysbox tests/helpers/cgroups.bash,
/// `SYSCONT_CGROUP_INIT`); `sysrunner`: ours, from an earlier life when the facts are read again;
/// `init`: moby's `hack/dind` and dockerd's own plan (`dockerd::plan::CGROUP_INIT`).
const KNOWN_LEAVES: [&str; 3] = ["init.scope", SYSRUNNER_LEAF, "init"];

/// How many times a write or rmdir that fails with EBUSY is tried before giving up.
pub const ATTEMPTS: u32 = 20;

/// The pause after the `attempt`-th EBUSY (1-based): 10 ms more each time, at most 100 ms, so
/// [`ATTEMPTS`] tries take about 1.5 s in all.
pub fn pause(attempt: u32) -> Duration {
    Duration::from_millis(10 * u64::from(attempt.clamp(1, 10)))
}

// ---------------------------------------------------------------------------------------------
// What the container has: read through a root path, parsed without I/O.

/// Every cgroup hierarchy mounted under `/sys/fs/cgroup`, and sysrunner's place in each: what
/// [`plan`] needs beyond [`Facts`], which keep only the version, one path and the controllers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub hierarchies: Vec<Hierarchy>,
    /// Hierarchies `/proc/self/cgroup` lists that no mount under `/sys/fs/cgroup` shows, by their
    /// `/proc/self/cgroup` field (`net_cls,net_prio`, `name=systemd`; `""` for cgroup v2's `0::`).
    pub unmounted: Vec<String>,
    /// The tmpfs on `/sys/fs/cgroup` that holds the v1 mount points.
    pub tmpfs: Option<Tmpfs>,
    /// Symlinks in `/sys/fs/cgroup` to a sibling (`cpu -> cpu,cpuacct`).
    pub links: Vec<Link>,
}

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    /// `/sys/fs/cgroup` (v2), `/sys/fs/cgroup/cpu,cpuacct`, `/sys/fs/cgroup/unified` (hybrid).
    pub mount_point: PathBuf,
    pub fs: Fs,
    /// v1: the controllers and `name=` the hierarchy is mounted with, which a fresh mount of the
    /// same hierarchy must name again (`cpu`, `cpuacct`; `name=systemd`). Empty for cgroup2.
    pub options: Vec<String>,
    /// mountinfo's root: the cgroup the mount point shows, as a path from this process's cgroup
    /// namespace root (`/`; `/docker/<id>` for a bind; `/..` for a mount from an outer namespace).
    pub mount_root: String,
    /// This process's cgroup in the hierarchy, from `/proc/self/cgroup`; `None` when no line
    /// names it.
    pub own: Option<String>,
    /// Neither the mount nor its superblock is read-only.
    pub rw: bool,
}

/// Which cgroup file system a hierarchy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fs {
    /// cgroup v1 (`mount -t cgroup`).
    Cgroup,
    /// cgroup v2 (`mount -t cgroup2`): the whole tree on v2, `unified` on a hybrid host.
    Cgroup2,
}

impl Fs {
    fn fstype(self) -> &'static str {
        match self {
            Fs::Cgroup => "cgroup",
            Fs::Cgroup2 => "cgroup2",
        }
    }
}

/// The tmpfs on `/sys/fs/cgroup` (v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tmpfs {
    /// Its `mode=` option, if it has one.
    pub mode: Option<String>,
    pub rw: bool,
}

/// A symlink in `/sys/fs/cgroup`: `name -> target`, both plain names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub name: String,
    pub target: String,
}

/// Reads `proc/self/mountinfo`, `proc/self/cgroup` and the symlinks in `sys/fs/cgroup` below
/// `root` (`/` in production, a captured tree in tests). Never fails: what cannot be read is
/// missing from the layout, and [`plan`] says what that means.
pub fn read_layout(root: &Path) -> Layout {
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap_or_default();
    let mut links = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root.join("sys/fs/cgroup")) {
        for e in entries.flatten() {
            let (Ok(name), Ok(target)) =
                (e.file_name().into_string(), std::fs::read_link(e.path()))
            else {
                continue;
            };
            if let Some(target) = target.to_str().filter(|t| is_plain_name(t)) {
                links.push(Link {
                    name,
                    target: target.to_owned(),
                });
            }
        }
    }
    links.sort_by(|a, b| a.name.cmp(&b.name));
    parse_layout(
        &read("proc/self/mountinfo"),
        &read("proc/self/cgroup"),
        links,
    )
}

/// The layout from the text of `/proc/self/mountinfo` and `/proc/self/cgroup`, and the symlinks
/// found in `/sys/fs/cgroup`.
pub fn parse_layout(mountinfo: &str, proc_cgroup: &str, links: Vec<Link>) -> Layout {
    // Mounts under /sys/fs/cgroup that are still visible: a later mount on a path hides every
    // earlier one on it or below it (mountinfo lists mounts in the order they were made).
    let mut mounts: Vec<MountLine> = Vec::new();
    for m in mountinfo.lines().filter_map(MountLine::parse) {
        if !under_cgroup_root(&m.mount_point) {
            continue;
        }
        mounts.retain(|old| !Path::new(&old.mount_point).starts_with(&m.mount_point));
        mounts.push(m);
    }

    // (field of /proc/self/cgroup, path); `""` is cgroup v2's `0::` line.
    let lines: Vec<(String, String)> = proc_cgroup
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_id, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            Some((ctrl.to_owned(), path.to_owned()))
        })
        .collect();
    let mut matched = vec![false; lines.len()];

    let mut layout = Layout {
        links,
        ..Layout::default()
    };
    for m in &mounts {
        let fs = match m.fstype.as_str() {
            "cgroup" => Fs::Cgroup,
            "cgroup2" => Fs::Cgroup2,
            "tmpfs" if m.mount_point == CGROUP_ROOT => {
                layout.tmpfs = Some(Tmpfs {
                    mode: m
                        .super_options
                        .iter()
                        .find_map(|o| o.strip_prefix("mode=").map(str::to_owned)),
                    rw: m.rw,
                });
                continue;
            }
            _ => continue,
        };
        let options: Vec<String> = match fs {
            Fs::Cgroup2 => Vec::new(),
            Fs::Cgroup => m
                .super_options
                .iter()
                .filter(|o| is_hierarchy_option(o))
                .cloned()
                .collect(),
        };
        let line = lines.iter().position(|(ctrl, _)| match fs {
            Fs::Cgroup2 => ctrl.is_empty(),
            Fs::Cgroup => !ctrl.is_empty() && same_set(ctrl.split(','), options.iter()),
        });
        if let Some(i) = line {
            matched[i] = true;
        }
        layout.hierarchies.push(Hierarchy {
            mount_point: PathBuf::from(&m.mount_point),
            fs,
            options,
            mount_root: m.root.clone(),
            own: line.map(|i| lines[i].1.clone()),
            rw: m.rw,
        });
    }
    layout.unmounted = lines
        .iter()
        .zip(&matched)
        .filter(|(_, m)| !**m)
        .map(|((ctrl, _), _)| ctrl.clone())
        .collect();
    layout
}

fn under_cgroup_root(p: &str) -> bool {
    Path::new(p).starts_with(CGROUP_ROOT)
}

/// A v1 superblock option that names the hierarchy (a controller or `name=`), as opposed to a
/// flag (`rw`, `xattr`, `noprefix`, `clone_children`, `release_agent=`, …). The kernel matches a
/// new mount to an existing hierarchy by exactly these (kernel/cgroup/cgroup-v1.c
/// `cgroup1_root_to_use`: a different set is EBUSY; different flags are only warned about).
fn is_hierarchy_option(o: &str) -> bool {
    const FLAGS: [&str; 8] = [
        "rw",
        "ro",
        "none",
        "noprefix",
        "xattr",
        "clone_children",
        "cpuset_v2_mode",
        "favordynmods",
    ];
    if let Some(name) = o.strip_prefix("name=") {
        return !name.is_empty();
    }
    !o.is_empty() && !o.contains('=') && !FLAGS.contains(&o)
}

fn same_set<'a, 'b>(a: impl Iterator<Item = &'a str>, b: impl Iterator<Item = &'b String>) -> bool {
    let mut a: Vec<&str> = a.collect();
    let mut b: Vec<&str> = b.map(String::as_str).collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

/// The fields of one mountinfo line this module needs (proc_pid_mountinfo(5)):
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
/// `probe::mountinfo` keeps no root field, which is why this small parser exists.
struct MountLine {
    root: String,
    mount_point: String,
    fstype: String,
    rw: bool,
    super_options: Vec<String>,
}

impl MountLine {
    fn parse(line: &str) -> Option<MountLine> {
        let (left, right) = line.split_once(" - ")?;
        let mut l = left.split(' ');
        let root = unescape(l.nth(3)?);
        let mount_point = unescape(l.next()?);
        let mount_options = l.next()?;
        let mut r = right.split(' ');
        let fstype = r.next()?.to_owned();
        let super_options: Vec<String> = r
            .nth(1)
            .unwrap_or("")
            .split(',')
            .map(str::to_owned)
            .collect();
        let ro = |mut opts: std::str::Split<'_, char>| opts.any(|o| o == "ro");
        let rw = !ro(mount_options.split(',')) && !super_options.iter().any(|o| o == "ro");
        Some(MountLine {
            root,
            mount_point,
            fstype,
            rw,
            super_options,
        })
    }
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/')
}

// ---------------------------------------------------------------------------------------------
// The plan: pure.

/// Where one life's cgroups go, decided before anything is touched. Serializable, so the probe's
/// report can show it and the sandbox core can hand it to the life's first process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The life's number: its cgroups are called `life-<n>`.
    pub life: u32,
    pub tree: Tree,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "version", rename_all = "lowercase")]
pub enum Tree {
    V2(V2Tree),
    V1(V1Tree),
}

/// cgroup v2: one tree, the life's cgroup with its leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V2Tree {
    /// `<C>`, the cgroup sysrunner manages: `/sys/fs/cgroup` under sysbox (the container's
    /// namespace root; sysrunner is in `init.scope`) and privileged (sysrunner is at `0::/`), or
    /// sysrunner's cgroup at a nested path (a container in the host's cgroup namespace).
    pub parent: PathBuf,
    /// Where `<C>`'s own processes go when it must be emptied: the leaf sysrunner is already in,
    /// else `<C>/sysrunner`.
    pub evacuate_to: PathBuf,
    /// `<C>/life-<n>`: the life's namespace root.
    pub life: PathBuf,
    /// `<C>/life-<n>/init`: where the life's processes live.
    pub leaf: PathBuf,
}

/// cgroup v1 (and a hybrid host's `unified` cgroup2): one life cgroup per hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Tree {
    pub cgroups: Vec<V1Cgroup>,
    /// The tmpfs that holds the mount points in the life: its `mode=` (the container's, else
    /// `755`) and whether it ends read-only as the container's is.
    pub tmpfs_mode: String,
    pub tmpfs_ro: bool,
    /// The container's symlinks between hierarchies, made again in the life.
    pub links: Vec<Link>,
    /// Named hierarchies the life does not get a cgroup in (and does not mount), with why.
    pub left_out: Vec<String>,
}

/// The life's cgroup in one v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Cgroup {
    /// The hierarchy's mount point, the same in the container and in the life.
    pub mount_point: PathBuf,
    pub fs: Fs,
    /// The options a fresh mount of this hierarchy names (see [`Hierarchy::options`]).
    pub options: Vec<String>,
    /// sysrunner's cgroup in this hierarchy.
    pub parent: PathBuf,
    /// `<parent>/life-<n>`.
    pub life: PathBuf,
    /// The hierarchy has `cpuset`: `cpuset.cpus` and `cpuset.mems` are copied from the parent.
    pub cpuset: bool,
}

impl Plan {
    /// Every cgroup the life's first process joins: `life-<n>` in each hierarchy.
    pub fn life_dirs(&self) -> Vec<&Path> {
        match &self.tree {
            Tree::V2(t) => vec![t.life.as_path()],
            Tree::V1(t) => t.cgroups.iter().map(|c| c.life.as_path()).collect(),
        }
    }
}

/// Why a life cannot have a cgroup of its own here. Permanent for this container: every life
/// would get the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("no cgroup file system is mounted under /sys/fs/cgroup")]
    NoCgroupFs,
    #[error(
        "{} is mounted read-only (Docker's default without --privileged): sysrunner cannot create the life's cgroup",
        .mount_point.display()
    )]
    ReadOnly { mount_point: PathBuf },
    #[error(
        "/proc/self/cgroup has no line for the hierarchy mounted at {}: sysrunner's place in it is unknown",
        .mount_point.display()
    )]
    UnknownPath { mount_point: PathBuf },
    #[error(
        "{} shows the cgroup {mount_root:?}, which does not contain sysrunner's cgroup {own:?} (a mount from another cgroup namespace); the container must mount its cgroup file systems in its own cgroup namespace",
        .mount_point.display()
    )]
    OutsideMount {
        mount_point: PathBuf,
        mount_root: String,
        own: String,
    },
    #[error(
        "/proc/self/cgroup lists {} but nothing is mounted for it under /sys/fs/cgroup: the life could not have a cgroup of its own there, and a job could mount it and write to sysrunner's",
        .hierarchies.iter().map(|h| if h.is_empty() { "cgroup2 (0::)".to_owned() } else { h.clone() }).collect::<Vec<_>>().join(", ")
    )]
    NotMounted { hierarchies: Vec<String> },
}

/// Where life `life`'s cgroups go, from the probe's facts and the container's cgroup layout
/// (both read through the same root).
pub fn plan(facts: &Facts, layout: &Layout, life: u32) -> Result<Plan, Unavailable> {
    let version = facts.cgroup.version.ok_or(Unavailable::NoCgroupFs)?;
    let name = format!("life-{life}");
    let tree = match version {
        CgroupVersion::V2 => Tree::V2(plan_v2(facts, layout, &name)?),
        CgroupVersion::V1 => Tree::V1(plan_v1(facts, layout, &name)?),
    };
    Ok(Plan { life, tree })
}

fn plan_v2(facts: &Facts, layout: &Layout, name: &str) -> Result<V2Tree, Unavailable> {
    let v2 = || layout.hierarchies.iter().filter(|h| h.fs == Fs::Cgroup2);
    // On a v2 host the one cgroup2 is at /sys/fs/cgroup; taking the only one otherwise lets a
    // hybrid host's `unified` stand in for it (the live test does).
    let h = v2()
        .find(|h| h.mount_point == Path::new(CGROUP_ROOT))
        .or_else(|| v2().next().filter(|_| v2().count() == 1))
        .ok_or(Unavailable::NoCgroupFs)?;
    if !facts.cgroup.rw || !h.rw {
        return Err(Unavailable::ReadOnly {
            mount_point: h.mount_point.clone(),
        });
    }
    let own = own_dir(h)?;
    let leaf_name = own.file_name().and_then(|n| n.to_str());
    let (parent, evacuate_to) = match leaf_name {
        Some(n) if own != h.mount_point && KNOWN_LEAVES.contains(&n) => {
            (own.parent().expect("below the mount point").to_owned(), own)
        }
        _ => (own.clone(), own.join(SYSRUNNER_LEAF)),
    };
    let life = parent.join(name);
    Ok(V2Tree {
        leaf: life.join(LIFE_LEAF),
        life,
        parent,
        evacuate_to,
    })
}

fn plan_v1(facts: &Facts, layout: &Layout, name: &str) -> Result<V1Tree, Unavailable> {
    if layout.hierarchies.is_empty() {
        return Err(Unavailable::NoCgroupFs);
    }
    if let Some(h) = layout.hierarchies.iter().find(|h| !h.rw) {
        return Err(Unavailable::ReadOnly {
            mount_point: h.mount_point.clone(),
        });
    }
    if !facts.cgroup.rw {
        return Err(Unavailable::ReadOnly {
            mount_point: CGROUP_ROOT.into(),
        });
    }
    let dangerous: Vec<String> = layout
        .unmounted
        .iter()
        .filter(|h| h.is_empty() || !only_named(h.split(',')))
        .cloned()
        .collect();
    if !dangerous.is_empty() {
        return Err(Unavailable::NotMounted {
            hierarchies: dangerous,
        });
    }
    let mut cgroups = Vec::new();
    let mut left_out = Vec::new();
    for h in &layout.hierarchies {
        let dir = match own_dir(h) {
            Ok(dir) => dir,
            // A named hierarchy holds no controller and no file that acts on processes: without
            // it the life only lacks what systemd keeps there.
            Err(e) if h.fs == Fs::Cgroup && only_named(h.options.iter().map(String::as_str)) => {
                left_out.push(format!("{}: {e}", h.mount_point.display()));
                continue;
            }
            Err(e) => return Err(e),
        };
        cgroups.push(V1Cgroup {
            mount_point: h.mount_point.clone(),
            fs: h.fs,
            options: h.options.clone(),
            life: dir.join(name),
            parent: dir,
            cpuset: h.options.iter().any(|o| o == "cpuset"),
        });
    }
    let mounted: Vec<&str> = cgroups
        .iter()
        .filter_map(|c| c.mount_point.strip_prefix(CGROUP_ROOT).ok()?.to_str())
        .collect();
    let links = layout
        .links
        .iter()
        .filter(|l| mounted.contains(&l.target.as_str()) && !mounted.contains(&l.name.as_str()))
        .cloned()
        .collect();
    let tmpfs = layout.tmpfs.as_ref();
    Ok(V1Tree {
        cgroups,
        tmpfs_mode: tmpfs
            .and_then(|t| t.mode.clone())
            .unwrap_or_else(|| "755".into()),
        tmpfs_ro: tmpfs.is_some_and(|t| !t.rw),
        links,
        left_out,
    })
}

/// A v1 hierarchy with no controller, only a `name=` (systemd's).
fn only_named<'a>(options: impl Iterator<Item = &'a str>) -> bool {
    let mut any = false;
    for o in options {
        if !o.starts_with("name=") {
            return false;
        }
        any = true;
    }
    any
}

/// sysrunner's cgroup directory in `h`: the mount point plus the part of sysrunner's cgroup path
/// below what the mount shows.
fn own_dir(h: &Hierarchy) -> Result<PathBuf, Unavailable> {
    let own = h.own.as_deref().ok_or_else(|| Unavailable::UnknownPath {
        mount_point: h.mount_point.clone(),
    })?;
    let outside = || Unavailable::OutsideMount {
        mount_point: h.mount_point.clone(),
        mount_root: h.mount_root.clone(),
        own: own.to_owned(),
    };
    // `..` in either path (a cgroup outside this process's namespace) cannot be resolved to a
    // directory: the names between are not visible from here.
    let clean = |p: &str| {
        p.starts_with('/')
            && Path::new(p)
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
    };
    if !clean(own) || !clean(&h.mount_root) {
        return Err(outside());
    }
    let rel = Path::new(own)
        .strip_prefix(&h.mount_root)
        .map_err(|_| outside())?;
    Ok(h.mount_point.join(rel))
}

// ---------------------------------------------------------------------------------------------
// What the life mounts: data for the sandbox core's mount executor.

/// One step of making the life's `/sys/fs/cgroup`, in order. Paths are the life's (absolute, as
/// seen from its root once it is `/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum InnerStep {
    /// `mkdir -p` (a mount point inside the tmpfs just mounted).
    Mkdir(PathBuf),
    Mount(InnerMount),
    /// `ln -s <target> <link>`.
    Symlink {
        target: String,
        link: PathBuf,
    },
}

/// The arguments of one mount(2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InnerMount {
    pub source: Option<String>,
    pub fstype: Option<String>,
    pub target: PathBuf,
    #[serde(serialize_with = "flag_names")]
    pub flags: MsFlags,
    pub data: Option<String>,
}

fn flag_names<S: serde::Serializer>(f: &MsFlags, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(f.iter_names().map(|(n, _)| n))
}

/// What every cgroup mount in a container carries (Docker, sysbox and systemd mount them so).
const CGROUP_FLAGS: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_RELATIME);

/// What the life mounts at its `/sys/fs/cgroup`. Must be carried out by a process in the life's
/// cgroup namespace (after [`enter_leaf`]) and mount namespace, after the life's own sysfs is on
/// `/sys` (which provides the empty `/sys/fs/cgroup`).
pub fn inner_mounts(plan: &Plan) -> Vec<InnerStep> {
    let root = PathBuf::from(CGROUP_ROOT);
    match &plan.tree {
        // nsdelegate and the other cgroup2 options are the superblock's, settable only from the
        // initial cgroup namespace; a mount from inside takes them as they are.
        Tree::V2(_) => vec![InnerStep::Mount(InnerMount {
            source: Some("cgroup2".into()),
            fstype: Some("cgroup2".into()),
            target: root,
            flags: CGROUP_FLAGS,
            data: None,
        })],
        Tree::V1(t) => {
            let mut steps = vec![InnerStep::Mount(InnerMount {
                source: Some("tmpfs".into()),
                fstype: Some("tmpfs".into()),
                target: root.clone(),
                flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                data: Some(format!("mode={}", t.tmpfs_mode)),
            })];
            for c in &t.cgroups {
                steps.push(InnerStep::Mkdir(c.mount_point.clone()));
                steps.push(InnerStep::Mount(InnerMount {
                    source: Some(c.fs.fstype().into()),
                    fstype: Some(c.fs.fstype().into()),
                    target: c.mount_point.clone(),
                    flags: CGROUP_FLAGS,
                    data: (!c.options.is_empty()).then(|| c.options.join(",")),
                }));
            }
            for l in &t.links {
                steps.push(InnerStep::Symlink {
                    target: l.target.clone(),
                    link: root.join(&l.name),
                });
            }
            if t.tmpfs_ro {
                // A bind remount changes only this mount's flags, not the hierarchies on it.
                steps.push(InnerStep::Mount(InnerMount {
                    source: None,
                    fstype: None,
                    target: root,
                    flags: MsFlags::MS_REMOUNT
                        | MsFlags::MS_BIND
                        | MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                    data: None,
                }));
            }
            steps
        }
    }
}

/// Carries out `steps` below `root` (`/` after pivot_root, the new root's path before it).
pub fn perform_inner(steps: &[InnerStep], root: &Path) -> Result<(), CgroupError> {
    let at = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    for s in steps {
        match s {
            InnerStep::Mkdir(p) => {
                std::fs::create_dir_all(at(p)).map_err(io_err("mkdir", at(p)))?
            }
            InnerStep::Mount(m) => nix::mount::mount(
                m.source.as_deref(),
                &at(&m.target),
                m.fstype.as_deref(),
                m.flags,
                m.data.as_deref(),
            )
            .map_err(|e| io_err("mount", at(&m.target))(io::Error::from(e)))?,
            InnerStep::Symlink { target, link } => {
                std::os::unix::fs::symlink(target, at(link)).map_err(io_err("symlink", at(link)))?
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The effects.

/// The calls on a cgroup file system the steps make. Paths are the plan's, absolute.
pub trait CgroupFs {
    fn read(&self, path: &Path) -> io::Result<String>;
    /// One write(2) of `contents` (cgroupfs takes one value per write).
    fn write(&self, path: &Path, contents: &str) -> io::Result<()>;
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// The names of the directories (child cgroups) in `path`.
    fn list(&self, path: &Path) -> io::Result<Vec<String>>;
    fn sleep(&self, d: Duration);
}

/// The real file system, with the plan's absolute paths taken below `root` (`/` in production).
#[derive(Debug, Clone)]
pub struct HostFs {
    root: PathBuf,
}

impl HostFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HostFs { root: root.into() }
    }

    fn at(&self, p: &Path) -> PathBuf {
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }
}

impl Default for HostFs {
    fn default() -> Self {
        HostFs::new("/")
    }
}

impl CgroupFs for HostFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(self.at(path))
    }
    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.at(path))?;
        let n = f.write(contents.as_bytes())?;
        if n == contents.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write ({n} of {} bytes)", contents.len()),
            ))
        }
    }
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(self.at(path))
    }
    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(self.at(path))
    }
    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(self.at(path))? {
            let e = e?;
            if e.file_type()?.is_dir() {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// A step that failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// EBUSY every time: processes kept racing into `<C>` or stayed in `life-<n>`, or (rmdir) the
    /// kernel kept the cgroup populated.
    #[error("{op} {}: still busy after {attempts} attempts", .path.display())]
    Busy {
        op: &'static str,
        path: PathBuf,
        attempts: u32,
    },
    /// [`remove`] tried every hierarchy; these failed.
    #[error("cgroups left: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Left(Vec<CgroupError>),
}

impl CgroupError {
    /// Whether the same step may succeed later (for the next life): the kernel was busy. A
    /// refused write or a missing file will be refused again.
    pub fn retry_may_help(&self) -> bool {
        match self {
            CgroupError::Busy { .. } => true,
            CgroupError::Io { source, .. } => is_errno(source, Errno::EBUSY),
            CgroupError::Left(all) => all.iter().all(CgroupError::retry_may_help),
        }
    }
}

fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.into();
    move |source| CgroupError::Io { op, path, source }
}

fn is_errno(e: &io::Error, errno: Errno) -> bool {
    e.raw_os_error() == Some(errno as i32)
}

/// What [`prepare`] did, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prepared {
    /// v2: the controllers `<C>` now hands down (those it had not yet), and those it refused.
    pub parent: Delegation,
    /// v2: the processes moved out of `<C>` into its leaf.
    pub moved: Vec<i32>,
    /// cgroups of an earlier life with the same number, removed first.
    pub leftovers: Vec<PathBuf>,
}

/// Controllers a cgroup was asked to hand down to its children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delegation {
    pub enabled: Vec<String>,
    /// Controllers the kernel refused for another reason than EBUSY, with the error (the `cpu`
    /// controller while a realtime task sits outside the root, for one): the life runs without.
    pub refused: Vec<String>,
    /// Writes to `cgroup.subtree_control`, counting the ones that failed with EBUSY.
    pub attempts: u32,
}

/// Step 1, in sysrunner: `<C>` hands its controllers down (v2), the life's cgroups exist.
pub fn prepare(plan: &Plan, fs: &dyn CgroupFs) -> Result<Prepared, CgroupError> {
    let mut done = Prepared::default();
    match &plan.tree {
        Tree::V2(t) => {
            remove_tree(fs, &t.life, &mut done.leftovers)?;
            let mut leaf_made = false;
            done.parent = delegate(fs, &t.parent, &mut || {
                evacuate(fs, t, &mut leaf_made, &mut done.moved)
            })?;
            mkdir(fs, &t.life)?;
            mkdir(fs, &t.leaf)?;
        }
        Tree::V1(t) => {
            for c in &t.cgroups {
                remove_tree(fs, &c.life, &mut done.leftovers)?;
                mkdir(fs, &c.life)?;
                if c.cpuset {
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        let from = c.parent.join(f);
                        let value = fs.read(&from).map_err(io_err("read", &from))?;
                        let to = c.life.join(f);
                        fs.write(&to, value.trim()).map_err(io_err("write", &to))?;
                    }
                }
            }
        }
    }
    Ok(done)
}

/// Moves every process of `<C>` into `evacuate_to`. True when it moved one (then the next write
/// may succeed at once).
fn evacuate(
    fs: &dyn CgroupFs,
    t: &V2Tree,
    leaf_made: &mut bool,
    moved: &mut Vec<i32>,
) -> Result<bool, CgroupError> {
    if !*leaf_made {
        match fs.mkdir(&t.evacuate_to) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(io_err("mkdir", &t.evacuate_to)(e));
            }
            _ => *leaf_made = true,
        }
    }
    let from = t.parent.join("cgroup.procs");
    let to = t.evacuate_to.join("cgroup.procs");
    let procs = fs.read(&from).map_err(io_err("read", &from))?;
    let mut any = false;
    // A process outside this PID namespace reads as 0, which written back would mean "the
    // writer": skip it (it is not ours to move anyway).
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        if pid == 0 {
            continue;
        }
        match fs.write(&to, &pid.to_string()) {
            Ok(()) => {
                moved.push(pid);
                any = true;
            }
            // It exited between the read and the write.
            Err(e) if is_errno(&e, Errno::ESRCH) => {}
            Err(e) => return Err(io_err("move a process into", &to)(e)),
        }
    }
    Ok(any)
}

/// Step 2, in the life's first process: it joins `life-<n>` in every hierarchy. The caller then
/// unshares its cgroup namespace.
pub fn join(plan: &Plan, fs: &dyn CgroupFs) -> Result<(), CgroupError> {
    for dir in plan.life_dirs() {
        let procs = dir.join("cgroup.procs");
        fs.write(&procs, "0").map_err(io_err("join", &procs))?;
    }
    Ok(())
}

/// Step 3, in the life's first process, after its cgroup namespace is unshared: it moves into the
/// life's leaf (v2), so that the namespace root holds no process.
pub fn enter_leaf(plan: &Plan, fs: &dyn CgroupFs) -> Result<(), CgroupError> {
    if let Tree::V2(t) = &plan.tree {
        let procs = t.leaf.join("cgroup.procs");
        fs.write(&procs, "0").map_err(io_err("enter", &procs))?;
    }
    Ok(())
}

/// Step 4, in sysrunner, once the life's first process is in its leaf: `life-<n>` hands every
/// controller it has down (v2), so that dockerd can limit its containers.
pub fn enable(plan: &Plan, fs: &dyn CgroupFs) -> Result<Delegation, CgroupError> {
    match &plan.tree {
        Tree::V2(t) => delegate(fs, &t.life, &mut || Ok(false)),
        Tree::V1(_) => Ok(Delegation::default()),
    }
}

/// Step 6, in sysrunner, when every process of the life is gone: removes each of the life's cgroup
/// trees, deepest first. Tries every hierarchy before reporting what is left; a tree that is
/// already gone is fine. Returns the directories removed.
pub fn remove(plan: &Plan, fs: &dyn CgroupFs) -> Result<Vec<PathBuf>, CgroupError> {
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    for dir in plan.life_dirs() {
        if let Err(e) = remove_tree(fs, dir, &mut removed) {
            failed.push(e);
        }
    }
    if failed.is_empty() {
        Ok(removed)
    } else {
        Err(CgroupError::Left(failed))
    }
}

fn mkdir(fs: &dyn CgroupFs, dir: &Path) -> Result<(), CgroupError> {
    fs.mkdir(dir).map_err(io_err("mkdir", dir))
}

/// Writes `+ctrl …` for every controller of `dir/cgroup.controllers` not yet in
/// `dir/cgroup.subtree_control`. On EBUSY calls `on_busy` (which may empty `dir`; true when it
/// did something) and tries again, pausing first unless `on_busy` acted, [`ATTEMPTS`] writes in
/// all. A refusal that is no EBUSY (EINVAL, ENOENT, EOPNOTSUPP: one controller cannot be enabled
/// here) makes it try the controllers one by one and report those refused.
fn delegate(
    fs: &dyn CgroupFs,
    dir: &Path,
    on_busy: &mut dyn FnMut() -> Result<bool, CgroupError>,
) -> Result<Delegation, CgroupError> {
    let words = |file: &str| -> Result<Vec<String>, CgroupError> {
        let p = dir.join(file);
        let text = fs.read(&p).map_err(io_err("read", &p))?;
        Ok(text.split_whitespace().map(str::to_owned).collect())
    };
    let enabled = words("cgroup.subtree_control")?;
    let want: Vec<String> = words("cgroup.controllers")?
        .into_iter()
        .filter(|c| !enabled.contains(c))
        .collect();
    let mut d = Delegation::default();
    if want.is_empty() {
        return Ok(d);
    }
    let file = dir.join("cgroup.subtree_control");
    let mut write =
        |ctrls: &[String], d: &mut Delegation| -> Result<Option<io::Error>, CgroupError> {
            let line = ctrls
                .iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(" ");
            for attempt in 1..=ATTEMPTS {
                d.attempts += 1;
                match fs.write(&file, &line) {
                    Ok(()) => return Ok(None),
                    Err(e) if is_errno(&e, Errno::EBUSY) => {
                        if attempt == ATTEMPTS {
                            break;
                        }
                        if !on_busy()? {
                            fs.sleep(pause(attempt));
                        }
                    }
                    Err(e) if is_refusal(&e) => return Ok(Some(e)),
                    Err(e) => return Err(io_err("write", &file)(e)),
                }
            }
            Err(CgroupError::Busy {
                op: "enable controllers in",
                path: file.clone(),
                attempts: ATTEMPTS,
            })
        };
    match write(&want, &mut d)? {
        None => d.enabled = want,
        Some(e) if want.len() == 1 => d.refused.push(format!("{} ({e})", want[0])),
        Some(_) => {
            for c in want {
                match write(std::slice::from_ref(&c), &mut d)? {
                    None => d.enabled.push(c),
                    Some(e) => d.refused.push(format!("{c} ({e})")),
                }
            }
        }
    }
    Ok(d)
}

/// The kernel's answers for one controller it will not enable in this cgroup.
fn is_refusal(e: &io::Error) -> bool {
    [Errno::EINVAL, Errno::ENOENT, Errno::EOPNOTSUPP]
        .iter()
        .any(|n| is_errno(e, *n))
}

/// rmdir of `top` and every cgroup below it, children before parents, without recursion (a job
/// may nest cgroups as deep as it likes). Missing is done. EBUSY is retried: a cgroup stays
/// populated for a moment after its last task died.
fn remove_tree(
    fs: &dyn CgroupFs,
    top: &Path,
    removed: &mut Vec<PathBuf>,
) -> Result<(), CgroupError> {
    let mut stack = vec![(top.to_owned(), false)];
    while let Some((dir, children_done)) = stack.pop() {
        if !children_done {
            let children = match fs.list(&dir) {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("list", &dir)(e)),
            };
            stack.push((dir.clone(), true));
            for c in children.into_iter().rev() {
                stack.push((dir.join(c), false));
            }
            continue;
        }
        let mut attempt = 1;
        loop {
            match fs.rmdir(&dir) {
                Ok(()) => {
                    removed.push(dir);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if is_errno(&e, Errno::EBUSY) && attempt < ATTEMPTS => {
                    fs.sleep(pause(attempt));
                    attempt += 1;
                }
                Err(e) if is_errno(&e, Errno::EBUSY) => {
                    return Err(CgroupError::Busy {
                        op: "rmdir",
                        path: dir,
                        attempts: ATTEMPTS,
                    });
                }
                Err(e) => return Err(io_err("rmdir", &dir)(e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
