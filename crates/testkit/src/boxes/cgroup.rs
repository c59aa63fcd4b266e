//! Cgroup delegation for one box: reads the host's layout (v1, hybrid or v2) through a root path,
//! turns it into a pure plan of steps, carries the steps out, and removes the box's directories
//! again after killing what is left in them. Creates, changes and removes only the box's own
//! `<parent>/<box-name>` directories; never writes to a parent or any other cgroup.

use super::BoxKind;
use super::error::{Error, io_err};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which cgroup version a hierarchy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// One mounted cgroup hierarchy and where this process sits in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub version: Version,
    /// Where the hierarchy is mounted, e.g. `/sys/fs/cgroup/cpuset`.
    pub mount_point: PathBuf,
    /// The cgroup shown at `mount_point` (mountinfo's root field; `/` on a host).
    pub mount_root: PathBuf,
    /// This process's cgroup, from `/proc/self/cgroup`.
    pub own: PathBuf,
    /// v1 controllers (`cpuset`, `name=systemd`); empty for a cgroup2 hierarchy.
    pub controllers: Vec<String>,
}

impl Hierarchy {
    /// This process's cgroup directory.
    pub fn own_dir(&self) -> PathBuf {
        let rel = self
            .own
            .strip_prefix(&self.mount_root)
            .expect("parse() keeps only cgroups under the mount's root");
        self.mount_point.join(rel)
    }
}

/// The host's cgroups, as far as a box needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One hierarchy per v1 controller (or named hierarchy). A hybrid host's empty cgroup2 mount
    /// (`/sys/fs/cgroup/unified`) is in the list too, as a [`Version::V2`] entry.
    V1 { hierarchies: Vec<Hierarchy> },
    /// The single cgroup2 hierarchy.
    V2 { hierarchy: Hierarchy },
}

impl Layout {
    pub fn hierarchies(&self) -> &[Hierarchy] {
        match self {
            Layout::V1 { hierarchies } => hierarchies,
            Layout::V2 { hierarchy } => std::slice::from_ref(hierarchy),
        }
    }

    /// This process's cgroup directory in every hierarchy.
    pub fn own_dirs(&self) -> Vec<PathBuf> {
        self.hierarchies().iter().map(Hierarchy::own_dir).collect()
    }
}

/// Where under each hierarchy the box's directory is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupParent {
    /// [`CgroupParent::Own`] on cgroup v1 (and hybrid), [`CgroupParent::Root`] on cgroup v2.
    #[default]
    Auto,
    /// Under this process's own cgroup: the box inherits the limits its creator runs under (this
    /// machine's sandbox keeps test processes in a v1 memory cgroup they must not leave). On v2
    /// the own cgroup holds processes, so the kernel's no-internal-processes rule keeps it from
    /// handing controllers down: the box would get none.
    Own,
    /// Directly under the hierarchy's mount point, where dockerd's cgroupfs driver puts its own
    /// containers: on v2 the box gets every controller the root enables (systemd enables cpu, io,
    /// memory and pids there).
    Root,
}

/// What the plan is for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub kind: BoxKind,
    pub name: &'a str,
    /// The host uid and gid of the box's root (0 for a privileged-like box).
    pub uid: u32,
    pub gid: u32,
    pub parent: CgroupParent,
}

/// One host-side change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Mkdir(PathBuf),
    /// cpuset's `cpus`/`mems` start empty in a new v1 cgroup, and an empty cpuset admits no task.
    CopyFile {
        from: PathBuf,
        to: PathBuf,
    },
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
    },
    /// The directory and every file in it (v1 delegation: `chown -R` of a fresh cgroup).
    ChownContents {
        dir: PathBuf,
        uid: u32,
        gid: u32,
    },
}

/// The whole delegation, computed before anything is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Host side, before the box's first process exists.
    pub prepare: Vec<Step>,
    /// `cgroup.procs` files the host writes the box's first process into.
    pub join: Vec<PathBuf>,
    /// `cgroup.procs` files the box's first process writes itself into right after unsharing its
    /// cgroup namespace (so the namespace's root is one level up, as under sysbox on v2).
    pub join_after_unshare: Vec<PathBuf>,
    /// `cgroup.procs` files every later command joins before entering the box.
    pub exec_join: Vec<PathBuf>,
    /// (host directory, mount point inside the box): bound over the hierarchy's mount point.
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// The box's directories: emptied and removed, with everything below them, on teardown.
    pub dirs: Vec<PathBuf>,
    /// What the box will lack, for the test's log (e.g. controllers its v2 parent keeps).
    pub notes: Vec<String>,
}

/// The files the kernel's delegation contract hands to the delegatee on cgroup2
/// (Documentation/admin-guide/cgroup-v2.rst, "Delegation"); the resource files stay the parent's.
const V2_DELEGATED: [&str; 3] = ["cgroup.procs", "cgroup.subtree_control", "cgroup.threads"];

/// sysbox puts a container's processes one level below its cgroup namespace root on cgroup2, so
/// that the root may enable controllers for dockerd's children.
const INIT_SCOPE: &str = "init.scope";

/// Reads `/proc/self/mountinfo` and `/proc/self/cgroup` under `root`.
pub fn detect(root: &Path) -> Result<Layout, Error> {
    let read = |p: &str| {
        std::fs::read_to_string(root.join(p))
            .map_err(io_err(format!("read {}", root.join(p).display())))
    };
    parse(&read("proc/self/mountinfo")?, &read("proc/self/cgroup")?)
}

/// The layout from the text of `/proc/self/mountinfo` and `/proc/self/cgroup`.
pub fn parse(mountinfo: &str, proc_cgroup: &str) -> Result<Layout, Error> {
    let mounts: Vec<Mount> = mountinfo.lines().filter_map(Mount::parse).collect();
    let mut v1 = Vec::new();
    let mut v2 = None;
    for line in proc_cgroup.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::Layout(format!("/proc/self/cgroup line {line:?}")));
        };
        let own = PathBuf::from(path);
        if id == "0" && ctrl.is_empty() {
            if let Some(m) = mounts.iter().find(|m| m.fstype == "cgroup2") {
                v2 = Some(hierarchy(m, own, Vec::new(), Version::V2)?);
            }
            continue;
        }
        let controllers: Vec<String> = ctrl.split(',').map(str::to_owned).collect();
        // A controller co-mounted with others (cpu,cpuacct) appears once in both files; a
        // hierarchy that is not mounted cannot be delegated and is left out.
        if let Some(m) = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && controllers.iter().all(|c| m.super_opts.contains(c)))
        {
            v1.push(hierarchy(m, own, controllers, Version::V1)?);
        }
    }
    if !v1.is_empty() {
        v1.extend(v2);
        return Ok(Layout::V1 { hierarchies: v1 });
    }
    match v2 {
        Some(hierarchy) => Ok(Layout::V2 { hierarchy }),
        None => Err(Error::Layout(
            "no mounted cgroup hierarchy holds this process".into(),
        )),
    }
}

fn hierarchy(
    m: &Mount,
    own: PathBuf,
    controllers: Vec<String>,
    version: Version,
) -> Result<Hierarchy, Error> {
    if !own.starts_with(&m.root) {
        return Err(Error::Layout(format!(
            "own cgroup {} is outside what {} shows ({})",
            own.display(),
            m.mount_point.display(),
            m.root.display()
        )));
    }
    Ok(Hierarchy {
        version,
        mount_point: m.mount_point.clone(),
        mount_root: m.root.clone(),
        own,
        controllers,
    })
}

struct Mount {
    root: PathBuf,
    mount_point: PathBuf,
    fstype: String,
    super_opts: Vec<String>,
}

impl Mount {
    /// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
    fn parse(line: &str) -> Option<Mount> {
        let (left, right) = line.split_once(" - ")?;
        let mut l = left.split(' ');
        let root = unescape(l.nth(3)?);
        let mount_point = unescape(l.next()?);
        let mut r = right.split(' ');
        let fstype = r.next()?.to_owned();
        let super_opts = r.nth(1)?.split(',').map(str::to_owned).collect();
        Some(Mount {
            root: root.into(),
            mount_point: mount_point.into(),
            fstype,
            super_opts,
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

/// The delegation for one box. `read` returns a cgroup file's text (for a v2 parent's
/// `cgroup.controllers` and `cgroup.subtree_control`), or `None` when unreadable.
pub fn plan(
    layout: &Layout,
    req: &Request<'_>,
    read: &dyn Fn(&Path) -> Option<String>,
) -> Result<Plan, Error> {
    if !is_plain_name(req.name) {
        return Err(Error::Invalid(format!(
            "box name {:?}: expected one path component of [A-Za-z0-9._-]",
            req.name
        )));
    }
    let mut p = Plan {
        prepare: Vec::new(),
        join: Vec::new(),
        join_after_unshare: Vec::new(),
        exec_join: Vec::new(),
        binds: Vec::new(),
        dirs: Vec::new(),
        notes: Vec::new(),
    };
    let delegate = req.uid != 0 || req.gid != 0;
    let parent_of = match (req.parent, layout) {
        (CgroupParent::Auto, Layout::V1 { .. }) => CgroupParent::Own,
        (CgroupParent::Auto, Layout::V2 { .. }) => CgroupParent::Root,
        (p, _) => p,
    };
    for h in layout.hierarchies() {
        let parent = match parent_of {
            CgroupParent::Root => h.mount_point.clone(),
            _ => h.own_dir(),
        };
        let dir = parent.join(req.name);
        let procs = dir.join("cgroup.procs");
        let whole_v2 = matches!(layout, Layout::V2 { .. });
        if whole_v2 {
            // Controllers reach the box only if its parent hands them down. Enabling them is the
            // parent's owner's business (and fails with EBUSY while the parent holds processes),
            // so the plan only says what the box will lack.
            let enabled = words(read(&parent.join("cgroup.subtree_control")));
            let missing: Vec<String> = words(read(&parent.join("cgroup.controllers")))
                .into_iter()
                .filter(|c| !enabled.contains(c))
                .collect();
            if !missing.is_empty() {
                p.notes.push(format!(
                    "{} does not enable {} for its children: the box cannot use them",
                    parent.display(),
                    missing.join(" ")
                ));
            }
        }
        p.prepare.push(Step::Mkdir(dir.clone()));
        if h.controllers.iter().any(|c| c == "cpuset") {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                p.prepare.push(Step::CopyFile {
                    from: parent.join(f),
                    to: dir.join(f),
                });
            }
        }
        let init_scope = whole_v2 && req.kind == BoxKind::SysboxLike;
        if init_scope {
            p.prepare.push(Step::Mkdir(dir.join(INIT_SCOPE)));
        }
        if delegate {
            match h.version {
                Version::V1 => p.prepare.push(Step::ChownContents {
                    dir: dir.clone(),
                    uid: req.uid,
                    gid: req.gid,
                }),
                Version::V2 => {
                    let mut dirs = vec![dir.clone()];
                    if init_scope {
                        dirs.push(dir.join(INIT_SCOPE));
                    }
                    for d in dirs {
                        p.prepare.push(chown(&d, req));
                        for f in V2_DELEGATED {
                            p.prepare.push(chown(&d.join(f), req));
                        }
                    }
                }
            }
        }
        p.join.push(procs.clone());
        if init_scope {
            let scoped = dir.join(INIT_SCOPE).join("cgroup.procs");
            p.join_after_unshare.push(scoped.clone());
            p.exec_join.push(scoped);
        } else {
            p.exec_join.push(procs);
        }
        p.binds.push((dir.clone(), h.mount_point.clone()));
        p.dirs.push(dir);
    }
    Ok(p)
}

fn chown(path: &Path, req: &Request<'_>) -> Step {
    Step::Chown {
        path: path.to_owned(),
        uid: req.uid,
        gid: req.gid,
    }
}

fn words(s: Option<String>) -> Vec<String> {
    s.unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

pub(crate) fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The file operations a plan needs; the host's real cgroupfs in production, a recorder in tests.
pub trait CgroupFs {
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    fn read(&self, path: &Path) -> io::Result<String>;
    fn write(&self, path: &Path, contents: &str) -> io::Result<()>;
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    fn entries(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
}

/// The real filesystem.
pub struct HostFs;

impl CgroupFs for HostFs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        // cgroupfs takes one write per value: no truncation, no buffering.
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all(contents.as_bytes())
    }
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
    }
    fn entries(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect()
    }
}

/// Carries out `steps` in order; stops at the first failure.
pub fn apply(fs: &dyn CgroupFs, steps: &[Step]) -> Result<(), Error> {
    for step in steps {
        match step {
            Step::Mkdir(d) => fs
                .mkdir(d)
                .map_err(io_err(format!("mkdir {}", d.display())))?,
            Step::CopyFile { from, to } => {
                let v = fs
                    .read(from)
                    .map_err(io_err(format!("read {}", from.display())))?;
                fs.write(to, v.trim())
                    .map_err(io_err(format!("write {}", to.display())))?;
            }
            Step::Chown { path, uid, gid } => fs
                .chown(path, *uid, *gid)
                .map_err(io_err(format!("chown {}", path.display())))?,
            Step::ChownContents { dir, uid, gid } => {
                let what = || format!("chown -R {}", dir.display());
                fs.chown(dir, *uid, *gid).map_err(io_err(what()))?;
                for e in fs.entries(dir).map_err(io_err(what()))? {
                    fs.chown(&e, *uid, *gid).map_err(io_err(what()))?;
                }
            }
        }
    }
    Ok(())
}

/// Moves `pid` (0: the caller) into each `cgroup.procs`.
pub fn join(fs: &dyn CgroupFs, procs: &[PathBuf], pid: i32) -> Result<(), Error> {
    for p in procs {
        fs.write(p, &pid.to_string())
            .map_err(io_err(format!("move pid {pid} into {}", p.display())))?;
    }
    Ok(())
}

/// Every process in `dir` and the cgroups below it. A cgroup that goes away while it is read
/// (dockerd removes a container's when the container ends) has no processes.
pub fn pids_below(dir: &Path) -> io::Result<Vec<i32>> {
    // ENODEV: the directory was removed after it was opened.
    let gone = |e: &io::Error| {
        e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(nix::libc::ENODEV)
    };
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        match std::fs::read_to_string(d.join("cgroup.procs")) {
            Ok(s) => out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        }
        let entries = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        };
        for e in entries {
            match e.and_then(|e| Ok((e.file_type()?, e.path()))) {
                Ok((t, path)) if t.is_dir() => stack.push(path),
                Ok(_) => {}
                Err(e) if gone(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Kills every process left in `dirs` and removes them, deepest first, retrying while the kernel
/// still counts dying processes. A directory that does not exist is already done.
pub fn remove(dirs: &[PathBuf], timeout: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    let mut left = Vec::new();
    for dir in dirs {
        loop {
            if !dir.exists() {
                break;
            }
            let pids = pids_below(dir).unwrap_or_default();
            for pid in &pids {
                // The pid was read from the box's cgroup a moment ago; ESRCH means it is gone.
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            if pids.is_empty() && rmdir_tree(dir).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                left.push(format!(
                    "{} (pids {:?}: {})",
                    dir.display(),
                    pids,
                    rmdir_tree(dir)
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default()
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if left.is_empty() {
        Ok(())
    } else {
        Err(Error::Teardown(format!("cgroups {}", left.join(", "))))
    }
}

/// rmdir of `dir` after every directory below it. cgroupfs files go with their directory.
fn rmdir_tree(dir: &Path) -> io::Result<()> {
    let mut subdirs = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let e = e?;
                if e.file_type()?.is_dir() {
                    subdirs.push(e.path());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    for s in subdirs {
        rmdir_tree(&s)?;
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
