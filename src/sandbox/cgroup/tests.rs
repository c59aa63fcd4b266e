//! The plan from captured and constructed trees, and the effects against a fake cgroup file system
//! that keeps the kernel's rules (no internal processes on v2, top-down controllers, rmdir only of
//! an empty leaf, `0` meaning the writer) and can fail chosen calls N times: the v2 steps a cgroup
//! v1 machine cannot run, EBUSY retries, the bounds, the order of removal.

use super::*;
use crate::probe;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

fn probe_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/probe")
        .join(name)
}

fn cgroup_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cgroup")
        .join(name)
}

fn plan_at(root: &Path, life: u32) -> Result<Plan, Unavailable> {
    plan(&probe::read_facts(root), &read_layout(root), life)
}

fn v2(p: &Plan) -> &V2Tree {
    match &p.tree {
        Tree::V2(t) => t,
        Tree::V1(_) => panic!("expected a v2 plan: {p:#?}"),
    }
}

fn v1(p: &Plan) -> &V1Tree {
    match &p.tree {
        Tree::V1(t) => t,
        Tree::V2(_) => panic!("expected a v1 plan: {p:#?}"),
    }
}

fn pb(s: &str) -> PathBuf {
    PathBuf::from(s)
}

// ----- The plan -------------------------------------------------------------------------------

#[test]
fn sysbox_v2_puts_the_life_beside_init_scope() {
    let p = plan_at(&probe_fixture("sysbox-v2"), 1).unwrap();
    assert_eq!(
        v2(&p),
        &V2Tree {
            parent: pb("/sys/fs/cgroup"),
            evacuate_to: pb("/sys/fs/cgroup/init.scope"),
            life: pb("/sys/fs/cgroup/life-1"),
            leaf: pb("/sys/fs/cgroup/life-1/init"),
        }
    );
}

#[test]
fn privileged_v2_at_the_root_gets_a_sysrunner_leaf() {
    let p = plan_at(&probe_fixture("privileged-v2"), 7).unwrap();
    assert_eq!(
        v2(&p),
        &V2Tree {
            parent: pb("/sys/fs/cgroup"),
            evacuate_to: pb("/sys/fs/cgroup/sysrunner"),
            life: pb("/sys/fs/cgroup/life-7"),
            leaf: pb("/sys/fs/cgroup/life-7/init"),
        }
    );
}

/// After life 1 sysrunner sits in its own leaf; facts read again must give the same tree.
#[test]
fn a_later_life_plans_the_same_tree_after_sysrunner_moved_into_its_leaf() {
    let first = plan_at(&probe_fixture("privileged-v2"), 2).unwrap();
    let later = plan_at(&cgroup_fixture("v2-moved"), 2).unwrap();
    assert_eq!(first, later);
}

#[test]
fn v2_at_a_nested_path_manages_its_own_cgroup() {
    let p = plan_at(&cgroup_fixture("v2-nested"), 1).unwrap();
    let c = "/sys/fs/cgroup/system.slice/docker-3f2a9c1e.scope";
    assert_eq!(
        v2(&p),
        &V2Tree {
            parent: pb(c),
            evacuate_to: pb(&format!("{c}/sysrunner")),
            life: pb(&format!("{c}/life-1")),
            leaf: pb(&format!("{c}/life-1/init")),
        }
    );
}

#[test]
fn v1_hybrid_host_gets_one_life_cgroup_per_hierarchy_under_its_own() {
    let p = plan_at(&probe_fixture("host"), 3).unwrap();
    let t = v1(&p);
    let lives: Vec<&str> = t.cgroups.iter().map(|c| c.life.to_str().unwrap()).collect();
    assert_eq!(
        lives,
        [
            "/sys/fs/cgroup/cpu/life-3",
            "/sys/fs/cgroup/cpuacct/life-3",
            "/sys/fs/cgroup/cpuset/life-3",
            // This machine keeps its processes in a memory cgroup of their own.
            "/sys/fs/cgroup/memory/process_api/4984e9f8c1223937f0a5d24615b26739/life-3",
            "/sys/fs/cgroup/devices/life-3",
            "/sys/fs/cgroup/freezer/life-3",
            "/sys/fs/cgroup/blkio/life-3",
            "/sys/fs/cgroup/pids/life-3",
            "/sys/fs/cgroup/systemd/life-3",
            "/sys/fs/cgroup/unified/life-3",
        ]
    );
    let cpuset: Vec<&Path> = t
        .cgroups
        .iter()
        .filter(|c| c.cpuset)
        .map(|c| c.mount_point.as_path())
        .collect();
    assert_eq!(cpuset, [Path::new("/sys/fs/cgroup/cpuset")]);
    let systemd = &t.cgroups[8];
    assert_eq!(systemd.options, ["name=systemd"]);
    assert_eq!(t.cgroups[9].fs, Fs::Cgroup2);
    assert!(t.cgroups[9].options.is_empty());
    assert_eq!((t.tmpfs_mode.as_str(), t.tmpfs_ro), ("755", false));
    assert!(t.left_out.is_empty() && t.links.is_empty());
}

#[test]
fn v1_binds_of_the_container_cgroup_with_comounted_controllers_and_symlinks() {
    let p = plan_at(&cgroup_fixture("v1-docker"), 1).unwrap();
    let t = v1(&p);
    let cpu = t
        .cgroups
        .iter()
        .find(|c| c.mount_point == Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        .unwrap();
    // The mount shows the container's cgroup itself: sysrunner's cgroup is the mount point.
    assert_eq!(cpu.parent, pb("/sys/fs/cgroup/cpu,cpuacct"));
    assert_eq!(cpu.life, pb("/sys/fs/cgroup/cpu,cpuacct/life-1"));
    assert_eq!(cpu.options, ["cpu", "cpuacct"]);
    let systemd = t
        .cgroups
        .iter()
        .find(|c| c.mount_point == Path::new("/sys/fs/cgroup/systemd"))
        .unwrap();
    assert_eq!(systemd.options, ["name=systemd"], "xattr is a flag");
    let cpuset = t.cgroups.iter().find(|c| c.cpuset).unwrap();
    assert_eq!(cpuset.options, ["cpuset"], "clone_children is a flag");
    assert_eq!(t.cgroups.len(), 13);
    let links: Vec<(&str, &str)> = t
        .links
        .iter()
        .map(|l| (l.name.as_str(), l.target.as_str()))
        .collect();
    assert_eq!(
        links,
        [
            ("cpu", "cpu,cpuacct"),
            ("cpuacct", "cpu,cpuacct"),
            ("net_cls", "net_cls,net_prio"),
            ("net_prio", "net_cls,net_prio"),
        ]
    );
    assert!(t.tmpfs_ro);
}

#[test]
fn sysbox_v1_leaves_out_a_named_hierarchy_proc_self_cgroup_does_not_list() {
    let p = plan_at(&probe_fixture("sysbox-v1"), 1).unwrap();
    let t = v1(&p);
    assert_eq!(t.cgroups.len(), 9, "8 controllers and unified");
    assert!(!t.cgroups.iter().any(|c| c.mount_point.ends_with("systemd")));
    assert_eq!(t.left_out.len(), 1);
    assert!(t.left_out[0].contains("/sys/fs/cgroup/systemd"), "{t:?}");
}

#[test]
fn a_read_only_cgroupfs_is_unavailable() {
    for (name, mount_point) in [
        ("docker-default", "/sys/fs/cgroup"),
        ("allcaps-ro-cgroup", "/sys/fs/cgroup/cpu"),
    ] {
        let e = plan_at(&probe_fixture(name), 1).unwrap_err();
        assert_eq!(
            e,
            Unavailable::ReadOnly {
                mount_point: pb(mount_point)
            },
            "{name}"
        );
        assert!(e.to_string().contains("read-only"), "{e}");
    }
}

#[test]
fn no_cgroupfs_is_unavailable() {
    let e = plan(&Facts::default(), &Layout::default(), 1).unwrap_err();
    assert_eq!(e, Unavailable::NoCgroupFs);
}

/// `unshare --cgroup` without a fresh mount: the inherited mount shows a tree above the namespace
/// root, and the names between are not visible.
#[test]
fn a_mount_inherited_from_another_cgroup_namespace_is_unavailable() {
    let e = plan_at(&probe_fixture("privileged-v1"), 1).unwrap_err();
    assert_eq!(
        e,
        Unavailable::OutsideMount {
            mount_point: pb("/sys/fs/cgroup/memory"),
            mount_root: "/../..".into(),
            own: "/".into(),
        }
    );
    let layout = parse_layout(
        "30 20 0:30 /.. /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n",
        "0::/\n",
        vec![],
    );
    let facts = v2_facts();
    assert!(matches!(
        plan(&facts, &layout, 1),
        Err(Unavailable::OutsideMount { .. })
    ));
    // sysrunner itself outside its namespace (moved after the unshare).
    let layout = parse_layout(
        "30 20 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n",
        "0::/../x\n",
        vec![],
    );
    assert!(matches!(
        plan(&facts, &layout, 1),
        Err(Unavailable::OutsideMount { .. })
    ));
}

fn v2_facts() -> Facts {
    let mut f = Facts::default();
    f.cgroup.version = Some(CgroupVersion::V2);
    f.cgroup.rw = true;
    f
}

fn v1_facts() -> Facts {
    let mut f = Facts::default();
    f.cgroup.version = Some(CgroupVersion::V1);
    f.cgroup.rw = true;
    f
}

const HOST_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:31 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
34 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
";

/// A controller the container has not mounted would leave the life's namespace root at
/// sysrunner's cgroup in that hierarchy, where a job could mount it and freeze or limit sysrunner.
#[test]
fn a_listed_controller_or_cgroup2_that_is_not_mounted_is_unavailable() {
    let layout = parse_layout(
        HOST_MOUNTS,
        "5:perf_event:/\n4:freezer:/\n2:cpu:/\n1:name=systemd:/\n0::/\n",
        vec![],
    );
    let e = plan(&v1_facts(), &layout, 1).unwrap_err();
    assert_eq!(
        e,
        Unavailable::NotMounted {
            hierarchies: vec!["perf_event".into(), String::new()]
        }
    );
    assert!(e.to_string().contains("perf_event, cgroup2 (0::)"), "{e}");
}

#[test]
fn an_unmounted_named_hierarchy_is_harmless() {
    let mounts = format!(
        "{HOST_MOUNTS}35 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    );
    let layout = parse_layout(
        &mounts,
        "6:name=other:/\n4:freezer:/\n2:cpu:/\n1:name=systemd:/\n0::/\n",
        vec![],
    );
    assert_eq!(layout.unmounted, ["name=other"]);
    let p = plan(&v1_facts(), &layout, 1).unwrap();
    assert_eq!(v1(&p).cgroups.len(), 4);
}

#[test]
fn a_controller_hierarchy_proc_self_cgroup_does_not_list_is_unavailable() {
    let layout = parse_layout(HOST_MOUNTS, "2:cpu:/\n1:name=systemd:/\n", vec![]);
    assert_eq!(
        plan(&v1_facts(), &layout, 1).unwrap_err(),
        Unavailable::UnknownPath {
            mount_point: pb("/sys/fs/cgroup/freezer")
        }
    );
}

#[test]
fn the_layout_keeps_only_visible_mounts_and_unescapes_them() {
    let layout = parse_layout(
        "\
20 1 0:20 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=700
21 20 0:21 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
22 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
23 22 0:23 /a\\040b /sys/fs/cgroup/x\\040y rw - cgroup cgroup rw,release_agent=/x,noprefix,cpuset
24 1 0:24 / /mnt/cgroup rw - cgroup cgroup rw,memory
",
        "1:cpuset:/a b/c\n0::/\n",
        vec![],
    );
    assert!(layout.tmpfs.is_none(), "the cgroup2 on top hides the tmpfs");
    assert_eq!(layout.hierarchies.len(), 2, "{layout:#?}");
    let h = &layout.hierarchies[1];
    assert_eq!(h.mount_point, pb("/sys/fs/cgroup/x y"));
    assert_eq!(h.mount_root, "/a b");
    assert_eq!(h.options, ["cpuset"]);
    assert_eq!(h.own.as_deref(), Some("/a b/c"));
    assert!(layout.unmounted.is_empty());
}

#[test]
fn the_plan_survives_a_json_round_trip() {
    for root in [probe_fixture("host"), probe_fixture("sysbox-v2")] {
        let p = plan_at(&root, 4).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        let back: Plan = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }
}

// ----- What the life mounts ------------------------------------------------------------------

#[test]
fn a_v2_life_mounts_one_fresh_cgroup2() {
    let p = plan_at(&probe_fixture("sysbox-v2"), 1).unwrap();
    assert_eq!(
        inner_mounts(&p),
        [InnerStep::Mount(InnerMount {
            source: Some("cgroup2".into()),
            fstype: Some("cgroup2".into()),
            target: pb("/sys/fs/cgroup"),
            flags: MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_RELATIME,
            data: None,
        })]
    );
}

#[test]
fn a_v1_life_mounts_a_tmpfs_each_hierarchy_the_links_then_makes_it_read_only() {
    let p = plan_at(&cgroup_fixture("v1-docker"), 1).unwrap();
    let steps = inner_mounts(&p);
    let InnerStep::Mount(tmpfs) = &steps[0] else {
        panic!("{steps:#?}")
    };
    assert_eq!(
        (tmpfs.fstype.as_deref(), tmpfs.data.as_deref()),
        (Some("tmpfs"), Some("mode=755"))
    );
    assert_eq!(steps[1], InnerStep::Mkdir(pb("/sys/fs/cgroup/systemd")));
    let mounts: Vec<(&str, Option<&str>, Option<&str>)> = steps
        .iter()
        .filter_map(|s| match s {
            InnerStep::Mount(m) if m.fstype.as_deref() != Some("tmpfs") => Some((
                m.target.to_str().unwrap(),
                m.fstype.as_deref(),
                m.data.as_deref(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        mounts[0],
        (
            "/sys/fs/cgroup/systemd",
            Some("cgroup"),
            Some("name=systemd")
        )
    );
    assert_eq!(
        mounts[1],
        (
            "/sys/fs/cgroup/cpu,cpuacct",
            Some("cgroup"),
            Some("cpu,cpuacct")
        )
    );
    assert_eq!(
        mounts[12],
        ("/sys/fs/cgroup/unified", Some("cgroup2"), None)
    );
    assert_eq!(
        mounts[13],
        ("/sys/fs/cgroup", None, None),
        "the read-only remount"
    );
    assert!(steps.contains(&InnerStep::Symlink {
        target: "cpu,cpuacct".into(),
        link: pb("/sys/fs/cgroup/cpu"),
    }));
    let InnerStep::Mount(last) = steps.last().unwrap() else {
        panic!("{steps:#?}")
    };
    assert!(
        last.flags
            .contains(MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY)
    );
    // Every mount point exists before its mount, after the tmpfs.
    for (i, s) in steps.iter().enumerate().skip(1) {
        if let InnerStep::Mount(m) = s
            && m.fstype.is_some()
        {
            assert_eq!(steps[i - 1], InnerStep::Mkdir(m.target.clone()));
        }
    }
}

// ----- A fake cgroup file system --------------------------------------------------------------

#[derive(Default)]
struct Node {
    procs: Vec<i32>,
    subtree: Vec<String>,
    files: BTreeMap<String, String>,
}

/// A failure the fake returns for the next `times` calls of `op` on `path`.
struct Fault {
    op: &'static str,
    path: PathBuf,
    errno: Errno,
    times: u32,
}

/// cgroupfs as far as the steps see it, keeping the kernel's rules.
#[derive(Default)]
struct Kernel {
    nodes: RefCell<BTreeMap<PathBuf, Node>>,
    /// Hierarchy roots with the controllers they have.
    roots: BTreeMap<PathBuf, Vec<String>>,
    /// The process that `0` names (the writer).
    me: Cell<i32>,
    next_pid: Cell<i32>,
    ops: RefCell<Vec<String>>,
    faults: RefCell<Vec<Fault>>,
    /// (cgroup, times): a new process appears there right before each of the next `times` writes
    /// to its `cgroup.subtree_control`, as a process forked by one still there would.
    racing: RefCell<Option<(PathBuf, u32)>>,
    /// Controllers whose enabling the kernel refuses with EINVAL.
    refused: Vec<String>,
    /// Processes outside the reader's PID namespace: `cgroup.procs` shows them as 0.
    invisible: Vec<i32>,
}

impl Kernel {
    fn hierarchy(mut self, root: &str, controllers: &[&str]) -> Self {
        self.roots.insert(
            root.into(),
            controllers.iter().map(|c| c.to_string()).collect(),
        );
        self.nodes.borrow_mut().insert(root.into(), Node::default());
        self
    }
    fn cgroup(self, path: &str, procs: &[i32]) -> Self {
        let mut nodes = self.nodes.borrow_mut();
        let n = nodes.entry(path.into()).or_default();
        n.procs.extend(procs);
        drop(nodes);
        self
    }
    /// Processes (or a new cgroup) made while a test runs.
    fn put(&self, path: &str, procs: &[i32]) {
        self.nodes
            .borrow_mut()
            .entry(path.into())
            .or_default()
            .procs
            .extend(procs);
    }
    fn file(self, path: &str, value: &str) -> Self {
        let p = Path::new(path);
        self.nodes
            .borrow_mut()
            .get_mut(p.parent().unwrap())
            .unwrap()
            .files
            .insert(
                p.file_name().unwrap().to_str().unwrap().into(),
                value.into(),
            );
        self
    }
    fn me(self, pid: i32) -> Self {
        self.me.set(pid);
        self.next_pid.set(1000);
        self
    }
    fn fail(&self, op: &'static str, path: &str, errno: Errno, times: u32) {
        self.faults.borrow_mut().push(Fault {
            op,
            path: path.into(),
            errno,
            times,
        });
    }
    fn ops(&self) -> Vec<String> {
        self.ops.borrow().clone()
    }
    fn ops_starting(&self, prefix: &str) -> Vec<String> {
        self.ops()
            .into_iter()
            .filter(|o| o.starts_with(prefix))
            .collect()
    }
    fn procs(&self, path: &str) -> Vec<i32> {
        self.nodes.borrow()[Path::new(path)].procs.clone()
    }
    fn subtree(&self, path: &str) -> Vec<String> {
        self.nodes.borrow()[Path::new(path)].subtree.clone()
    }
    fn exists(&self, path: &str) -> bool {
        self.nodes.borrow().contains_key(Path::new(path))
    }
    /// A process ends.
    fn exit(&self, pid: i32) {
        for n in self.nodes.borrow_mut().values_mut() {
            n.procs.retain(|p| *p != pid);
        }
    }
    fn root_of(&self, p: &Path) -> PathBuf {
        self.roots
            .keys()
            .filter(|r| p.starts_with(r))
            .max_by_key(|r| r.as_os_str().len())
            .expect("inside a hierarchy")
            .clone()
    }
    fn controllers(&self, dir: &Path, nodes: &BTreeMap<PathBuf, Node>) -> Vec<String> {
        match self.roots.get(dir) {
            Some(c) => c.clone(),
            None => nodes[dir.parent().unwrap()].subtree.clone(),
        }
    }
    fn fault(&self, op: &'static str, path: &Path) -> Option<io::Error> {
        let mut faults = self.faults.borrow_mut();
        let f = faults
            .iter_mut()
            .find(|f| f.op == op && f.path == path && f.times > 0)?;
        f.times -= 1;
        Some(io::Error::from_raw_os_error(f.errno as i32))
    }
    fn log(&self, s: String) {
        self.ops.borrow_mut().push(s);
    }
    fn errno(e: Errno) -> io::Error {
        io::Error::from_raw_os_error(e as i32)
    }
}

impl CgroupFs for Kernel {
    fn read(&self, path: &Path) -> io::Result<String> {
        let dir = path.parent().unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        let nodes = self.nodes.borrow();
        let n = nodes.get(dir).ok_or(Self::errno(Errno::ENOENT))?;
        let lines = |v: Vec<String>| v.iter().map(|l| format!("{l}\n")).collect::<String>();
        Ok(match name {
            "cgroup.procs" => lines(
                n.procs
                    .iter()
                    .map(|p| if self.invisible.contains(p) { 0 } else { *p })
                    .map(|p| p.to_string())
                    .collect(),
            ),
            "cgroup.controllers" => format!("{}\n", self.controllers(dir, &nodes).join(" ")),
            "cgroup.subtree_control" => format!("{}\n", n.subtree.join(" ")),
            other => n
                .files
                .get(other)
                .cloned()
                .ok_or(Self::errno(Errno::ENOENT))?,
        })
    }

    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        let dir = path.parent().unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        let result = self.fault("write", path).map_or_else(
            || match name {
                "cgroup.procs" => self.move_process(dir, contents),
                "cgroup.subtree_control" => self.subtree_control(dir, contents),
                other => {
                    let mut nodes = self.nodes.borrow_mut();
                    let n = nodes.get_mut(dir).ok_or(Self::errno(Errno::ENOENT))?;
                    n.files.insert(other.into(), contents.into());
                    Ok(())
                }
            },
            Err,
        );
        match &result {
            Ok(()) => self.log(format!("write {} {contents}", path.display())),
            Err(e) => self.log(format!(
                "write {} {contents}: {:?}",
                path.display(),
                Errno::from_raw(e.raw_os_error().unwrap_or(0))
            )),
        }
        result
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        let result = self.fault("mkdir", path).map_or_else(
            || {
                let mut nodes = self.nodes.borrow_mut();
                if nodes.contains_key(path) {
                    return Err(Self::errno(Errno::EEXIST));
                }
                if !nodes.contains_key(path.parent().unwrap()) {
                    return Err(Self::errno(Errno::ENOENT));
                }
                nodes.insert(path.into(), Node::default());
                Ok(())
            },
            Err,
        );
        self.log(match &result {
            Ok(()) => format!("mkdir {}", path.display()),
            Err(e) => format!("mkdir {}: {e}", path.display()),
        });
        result
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        let result = self.fault("rmdir", path).map_or_else(
            || {
                let mut nodes = self.nodes.borrow_mut();
                let n = nodes.get(path).ok_or(Self::errno(Errno::ENOENT))?;
                let has_children = nodes
                    .keys()
                    .any(|k| k.parent() == Some(path) && k.as_path() != path);
                if !n.procs.is_empty() || has_children {
                    return Err(Self::errno(Errno::EBUSY));
                }
                nodes.remove(path);
                Ok(())
            },
            Err,
        );
        self.log(match &result {
            Ok(()) => format!("rmdir {}", path.display()),
            Err(e) => format!(
                "rmdir {}: {:?}",
                path.display(),
                Errno::from_raw(e.raw_os_error().unwrap_or(0))
            ),
        });
        result
    }

    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        let nodes = self.nodes.borrow();
        if !nodes.contains_key(path) {
            return Err(Self::errno(Errno::ENOENT));
        }
        Ok(nodes
            .keys()
            .filter(|k| k.parent() == Some(path))
            .map(|k| k.file_name().unwrap().to_string_lossy().into_owned())
            .collect())
    }

    fn sleep(&self, d: Duration) {
        self.log(format!("sleep {}ms", d.as_millis()));
    }
}

impl Kernel {
    /// `cgroup.procs`: `0` is the writer; a cgroup that hands controllers down takes no process
    /// (unless it is a hierarchy's real root, which this fake does not model as exempt).
    fn move_process(&self, dir: &Path, contents: &str) -> io::Result<()> {
        let pid: i32 = contents
            .trim()
            .parse()
            .map_err(|_| Self::errno(Errno::EINVAL))?;
        let pid = if pid == 0 { self.me.get() } else { pid };
        let root = self.root_of(dir);
        let mut nodes = self.nodes.borrow_mut();
        if !nodes.values().any(|n| n.procs.contains(&pid)) {
            return Err(Self::errno(Errno::ESRCH));
        }
        let n = nodes.get(dir).ok_or(Self::errno(Errno::ENOENT))?;
        if !n.subtree.is_empty() {
            return Err(Self::errno(Errno::EBUSY));
        }
        for (p, n) in nodes.iter_mut() {
            if p.starts_with(&root) {
                n.procs.retain(|x| *x != pid);
            }
        }
        nodes.get_mut(dir).unwrap().procs.push(pid);
        Ok(())
    }

    fn subtree_control(&self, dir: &Path, contents: &str) -> io::Result<()> {
        if let Some((racy, times)) = self.racing.borrow_mut().as_mut()
            && racy == dir
            && *times > 0
        {
            *times -= 1;
            let pid = self.next_pid.get();
            self.next_pid.set(pid + 1);
            self.nodes
                .borrow_mut()
                .get_mut(dir)
                .unwrap()
                .procs
                .push(pid);
        }
        let mut nodes = self.nodes.borrow_mut();
        let available = self.controllers(dir, &nodes);
        let n = nodes.get_mut(dir).ok_or(Self::errno(Errno::ENOENT))?;
        let want: Vec<&str> = contents
            .split_whitespace()
            .map(|w| w.strip_prefix('+').unwrap_or(w))
            .collect();
        if want.iter().any(|c| !available.iter().any(|a| a == c)) {
            return Err(Self::errno(Errno::ENOENT));
        }
        if want.iter().any(|c| self.refused.iter().any(|r| r == c)) {
            return Err(Self::errno(Errno::EINVAL));
        }
        if !n.procs.is_empty() {
            return Err(Self::errno(Errno::EBUSY));
        }
        for c in want {
            if !n.subtree.iter().any(|s| s == c) {
                n.subtree.push(c.into());
            }
        }
        Ok(())
    }
}

const CTRLS: [&str; 4] = ["cpu", "io", "memory", "pids"];

/// A privileged container at `0::/`: sysrunner (23), its PID 1 (1) and a helper (17) in the root.
fn privileged_kernel() -> Kernel {
    Kernel::default()
        .hierarchy("/sys/fs/cgroup", &CTRLS)
        .cgroup("/sys/fs/cgroup", &[1, 17, 23])
        .me(23)
}

fn privileged_plan() -> Plan {
    plan_at(&probe_fixture("privileged-v2"), 1).unwrap()
}

/// sysrunner starts the life's first process (40): it begins where sysrunner is.
fn spawn_first_process(k: &Kernel, at: &str) {
    k.nodes
        .borrow_mut()
        .get_mut(Path::new(at))
        .unwrap()
        .procs
        .push(40);
    k.me.set(40);
}

// ----- The effects ----------------------------------------------------------------------------

#[test]
fn privileged_v2_life_from_prepare_to_remove_in_order() {
    let k = privileged_kernel();
    let p = privileged_plan();

    let prepared = prepare(&p, &k).unwrap();
    assert_eq!(
        k.ops(),
        [
            "write /sys/fs/cgroup/cgroup.subtree_control +cpu +io +memory +pids: EBUSY",
            "mkdir /sys/fs/cgroup/sysrunner",
            "write /sys/fs/cgroup/sysrunner/cgroup.procs 1",
            "write /sys/fs/cgroup/sysrunner/cgroup.procs 17",
            "write /sys/fs/cgroup/sysrunner/cgroup.procs 23",
            "write /sys/fs/cgroup/cgroup.subtree_control +cpu +io +memory +pids",
            "mkdir /sys/fs/cgroup/life-1",
            "mkdir /sys/fs/cgroup/life-1/init",
        ]
    );
    assert_eq!(prepared.moved, [1, 17, 23]);
    assert_eq!(prepared.parent.enabled, CTRLS);
    assert_eq!(prepared.parent.attempts, 2);
    assert!(k.procs("/sys/fs/cgroup").is_empty());

    spawn_first_process(&k, "/sys/fs/cgroup/sysrunner");
    k.ops.borrow_mut().clear();
    join(&p, &k).unwrap();
    // (the caller unshares its cgroup namespace here)
    enter_leaf(&p, &k).unwrap();
    k.me.set(23);
    let enabled = enable(&p, &k).unwrap();
    assert_eq!(
        k.ops(),
        [
            "write /sys/fs/cgroup/life-1/cgroup.procs 0",
            "write /sys/fs/cgroup/life-1/init/cgroup.procs 0",
            "write /sys/fs/cgroup/life-1/cgroup.subtree_control +cpu +io +memory +pids",
        ]
    );
    assert_eq!(enabled.enabled, CTRLS);
    assert!(k.procs("/sys/fs/cgroup/life-1").is_empty());
    assert_eq!(k.procs("/sys/fs/cgroup/life-1/init"), [40]);
    assert_eq!(k.subtree("/sys/fs/cgroup/life-1"), CTRLS);

    // dockerd makes its cgroups beside the leaf; a container (42) runs in one.
    k.mkdir(Path::new("/sys/fs/cgroup/life-1/docker")).unwrap();
    k.mkdir(Path::new("/sys/fs/cgroup/life-1/docker/abc"))
        .unwrap();
    k.put("/sys/fs/cgroup/life-1/docker/abc", &[42]);
    for pid in [40, 42] {
        k.exit(pid);
    }
    k.ops.borrow_mut().clear();
    let removed = remove(&p, &k).unwrap();
    let order = [
        "/sys/fs/cgroup/life-1/docker/abc",
        "/sys/fs/cgroup/life-1/docker",
        "/sys/fs/cgroup/life-1/init",
        "/sys/fs/cgroup/life-1",
    ];
    assert_eq!(removed, order.map(pb));
    assert_eq!(k.ops(), order.map(|d| format!("rmdir {d}")));
    assert!(!k.exists("/sys/fs/cgroup/life-1"));
    assert_eq!(k.procs("/sys/fs/cgroup/sysrunner"), [1, 17, 23]);
}

#[test]
fn sysbox_v2_moves_nothing_out_of_an_empty_parent() {
    let k = Kernel::default()
        .hierarchy("/sys/fs/cgroup", &CTRLS)
        .cgroup("/sys/fs/cgroup/init.scope", &[1, 23])
        .me(23);
    let p = plan_at(&probe_fixture("sysbox-v2"), 1).unwrap();
    let prepared = prepare(&p, &k).unwrap();
    assert_eq!(
        k.ops(),
        [
            "write /sys/fs/cgroup/cgroup.subtree_control +cpu +io +memory +pids",
            "mkdir /sys/fs/cgroup/life-1",
            "mkdir /sys/fs/cgroup/life-1/init",
        ]
    );
    assert!(prepared.moved.is_empty());
    assert_eq!(prepared.parent.attempts, 1);
}

#[test]
fn a_parent_that_already_hands_everything_down_is_not_written() {
    let k = Kernel::default()
        .hierarchy("/sys/fs/cgroup", &CTRLS)
        .cgroup("/sys/fs/cgroup/init.scope", &[1, 23])
        .me(23);
    k.nodes
        .borrow_mut()
        .get_mut(Path::new("/sys/fs/cgroup"))
        .unwrap()
        .subtree = CTRLS.map(String::from).to_vec();
    let p = plan_at(&probe_fixture("sysbox-v2"), 1).unwrap();
    prepare(&p, &k).unwrap();
    assert!(k.ops_starting("write").is_empty(), "{:?}", k.ops());
}

/// hack/dind's loop: processes started meanwhile land in `<C>` again; each EBUSY moves them.
#[test]
fn processes_racing_into_the_parent_are_moved_until_the_write_succeeds() {
    let k = privileged_kernel();
    *k.racing.borrow_mut() = Some(("/sys/fs/cgroup".into(), 3));
    let prepared = prepare(&privileged_plan(), &k).unwrap();
    assert_eq!(prepared.moved, [1, 17, 23, 1000, 1001, 1002]);
    assert_eq!(prepared.parent.attempts, 4);
    assert!(
        k.ops_starting("sleep").is_empty(),
        "a move that did something is retried at once"
    );
}

/// A `<C>` that never empties (something keeps forking into it): give up after the bound.
#[test]
fn prepare_gives_up_when_the_parent_never_empties() {
    let k = privileged_kernel();
    *k.racing.borrow_mut() = Some(("/sys/fs/cgroup".into(), u32::MAX));
    let e = prepare(&privileged_plan(), &k).unwrap_err();
    assert!(
        matches!(
            &e,
            CgroupError::Busy { attempts, path, .. }
                if *attempts == ATTEMPTS && path == Path::new("/sys/fs/cgroup/cgroup.subtree_control")
        ),
        "{e}"
    );
    assert!(e.retry_may_help());
    assert_eq!(
        k.ops_starting("write /sys/fs/cgroup/cgroup.subtree_control")
            .len(),
        ATTEMPTS as usize
    );
    assert!(
        !k.exists("/sys/fs/cgroup/life-1"),
        "no life cgroup without controllers"
    );
}

/// A process outside sysrunner's PID namespace reads as 0, which written back would move
/// sysrunner itself; it cannot be moved from here, so `<C>` stays busy.
#[test]
fn processes_outside_the_pid_namespace_are_not_moved_and_keep_the_parent_busy() {
    let mut k = Kernel::default()
        .hierarchy("/sys/fs/cgroup", &CTRLS)
        .cgroup("/sys/fs/cgroup", &[5, 23])
        .me(23);
    k.invisible = vec![5];
    let e = match prepare(&privileged_plan(), &k) {
        Ok(p) => panic!("{p:?}"),
        Err(e) => e,
    };
    assert!(matches!(e, CgroupError::Busy { .. }), "{e}");
    assert_eq!(k.procs("/sys/fs/cgroup/sysrunner"), [23]);
    assert_eq!(k.procs("/sys/fs/cgroup"), [5]);
    assert!(
        !k.ops()
            .contains(&"write /sys/fs/cgroup/sysrunner/cgroup.procs 0".to_owned())
    );
}

#[test]
fn enable_retries_ebusy_then_succeeds() {
    let k = privileged_kernel();
    let p = privileged_plan();
    prepare(&p, &k).unwrap();
    spawn_first_process(&k, "/sys/fs/cgroup/sysrunner");
    join(&p, &k).unwrap();
    enter_leaf(&p, &k).unwrap();
    k.fail(
        "write",
        "/sys/fs/cgroup/life-1/cgroup.subtree_control",
        Errno::EBUSY,
        3,
    );
    k.ops.borrow_mut().clear();
    let d = enable(&p, &k).unwrap();
    assert_eq!(d.attempts, 4);
    assert_eq!(d.enabled, CTRLS);
    assert_eq!(
        k.ops_starting("sleep"),
        ["sleep 10ms", "sleep 20ms", "sleep 30ms"]
    );
}

/// The first process never left the namespace root: the kernel answers EBUSY every time.
#[test]
fn enable_gives_up_after_the_bound_while_a_process_stays_in_the_life_root() {
    let k = privileged_kernel();
    let p = privileged_plan();
    prepare(&p, &k).unwrap();
    spawn_first_process(&k, "/sys/fs/cgroup/sysrunner");
    join(&p, &k).unwrap();
    k.ops.borrow_mut().clear();
    let e = enable(&p, &k).unwrap_err();
    assert!(
        matches!(e, CgroupError::Busy { attempts, .. } if attempts == ATTEMPTS),
        "{e}"
    );
    assert_eq!(
        k.ops_starting("write").len(),
        ATTEMPTS as usize,
        "{:#?}",
        k.ops()
    );
    let sleeps = k.ops_starting("sleep");
    assert_eq!(sleeps.len(), ATTEMPTS as usize - 1);
    assert_eq!(sleeps.last().unwrap(), "sleep 100ms", "pauses stay bounded");
}

#[test]
fn a_controller_the_kernel_refuses_is_reported_and_the_others_enabled() {
    let mut k = privileged_kernel();
    k.refused = vec!["cpu".into()];
    let p = privileged_plan();
    let prepared = prepare(&p, &k).unwrap();
    assert_eq!(prepared.parent.enabled, ["io", "memory", "pids"]);
    assert_eq!(prepared.parent.refused.len(), 1);
    assert!(
        prepared.parent.refused[0].starts_with("cpu ("),
        "{prepared:?}"
    );
    assert_eq!(k.subtree("/sys/fs/cgroup"), ["io", "memory", "pids"]);
}

#[test]
fn a_write_refused_for_want_of_permission_is_an_error() {
    let k = privileged_kernel();
    k.fail(
        "write",
        "/sys/fs/cgroup/cgroup.subtree_control",
        Errno::EACCES,
        1,
    );
    let e = prepare(&privileged_plan(), &k).unwrap_err();
    assert!(matches!(e, CgroupError::Io { .. }), "{e}");
    assert!(!e.retry_may_help());
}

#[test]
fn prepare_removes_what_an_earlier_life_of_the_same_number_left() {
    let k = privileged_kernel();
    k.nodes
        .borrow_mut()
        .get_mut(Path::new("/sys/fs/cgroup"))
        .unwrap()
        .procs
        .clear();
    k.put("/sys/fs/cgroup/sysrunner", &[1, 17, 23]);
    k.mkdir(Path::new("/sys/fs/cgroup/life-1")).unwrap();
    k.mkdir(Path::new("/sys/fs/cgroup/life-1/init")).unwrap();
    k.ops.borrow_mut().clear();
    let prepared = prepare(&privileged_plan(), &k).unwrap();
    assert_eq!(
        prepared.leftovers,
        [
            pb("/sys/fs/cgroup/life-1/init"),
            pb("/sys/fs/cgroup/life-1")
        ]
    );
    assert_eq!(
        k.ops()[..2],
        [
            "rmdir /sys/fs/cgroup/life-1/init",
            "rmdir /sys/fs/cgroup/life-1"
        ]
    );
    assert!(k.exists("/sys/fs/cgroup/life-1/init"));
}

#[test]
fn remove_goes_depth_first_and_retries_a_cgroup_still_releasing_its_tasks() {
    let k = privileged_kernel();
    let p = privileged_plan();
    prepare(&p, &k).unwrap();
    for d in ["docker", "docker/a", "docker/b", "docker/b/x"] {
        k.mkdir(&Path::new("/sys/fs/cgroup/life-1").join(d))
            .unwrap();
    }
    k.fail("rmdir", "/sys/fs/cgroup/life-1/docker/a", Errno::EBUSY, 2);
    k.ops.borrow_mut().clear();
    remove(&p, &k).unwrap();
    assert_eq!(
        k.ops(),
        [
            "rmdir /sys/fs/cgroup/life-1/docker/a: EBUSY",
            "sleep 10ms",
            "rmdir /sys/fs/cgroup/life-1/docker/a: EBUSY",
            "sleep 20ms",
            "rmdir /sys/fs/cgroup/life-1/docker/a",
            "rmdir /sys/fs/cgroup/life-1/docker/b/x",
            "rmdir /sys/fs/cgroup/life-1/docker/b",
            "rmdir /sys/fs/cgroup/life-1/docker",
            "rmdir /sys/fs/cgroup/life-1/init",
            "rmdir /sys/fs/cgroup/life-1",
        ]
    );
}

/// A deep chain a job made is removed bottom-up without recursion. (400 levels keeps the fake's
/// linear scans quick; the iteration is the same at any depth.)
#[test]
fn remove_handles_a_deep_tree() {
    let k = privileged_kernel();
    let p = privileged_plan();
    prepare(&p, &k).unwrap();
    let mut d = pb("/sys/fs/cgroup/life-1");
    for _ in 0..400 {
        d.push("n");
        k.mkdir(&d).unwrap();
    }
    let removed = remove(&p, &k).unwrap();
    assert_eq!(removed.len(), 402);
    assert!(!k.exists("/sys/fs/cgroup/life-1"));
}

#[test]
fn remove_tries_every_hierarchy_and_reports_what_is_left() {
    let k = Kernel::default()
        .hierarchy("/sys/fs/cgroup/cpu", &[])
        .hierarchy("/sys/fs/cgroup/cpuset", &[])
        .hierarchy("/sys/fs/cgroup/unified", &[])
        .cgroup("/sys/fs/cgroup/cpu", &[23])
        .cgroup("/sys/fs/cgroup/cpuset", &[23])
        .cgroup("/sys/fs/cgroup/unified", &[23])
        .file("/sys/fs/cgroup/cpuset/cpuset.cpus", "0-1\n")
        .file("/sys/fs/cgroup/cpuset/cpuset.mems", "0\n")
        .me(23);
    let p = v1_plan(&k);
    prepare(&p, &k).unwrap();
    spawn_first_process(&k, "/sys/fs/cgroup/cpu");
    join(&p, &k).unwrap();
    // Something of the life is still in its cpuset cgroup (a process that has not died yet).
    k.exit(40);
    k.put("/sys/fs/cgroup/cpuset/life-1", &[44]);
    k.ops.borrow_mut().clear();
    let e = remove(&p, &k).unwrap_err();
    let CgroupError::Left(left) = &e else {
        panic!("{e}")
    };
    assert_eq!(left.len(), 1);
    assert!(
        e.to_string().contains("/sys/fs/cgroup/cpuset/life-1"),
        "{e}"
    );
    assert!(e.retry_may_help());
    assert!(!k.exists("/sys/fs/cgroup/cpu/life-1"));
    assert!(!k.exists("/sys/fs/cgroup/unified/life-1"));
    assert_eq!(
        k.ops_starting("rmdir /sys/fs/cgroup/cpuset/life-1").len(),
        ATTEMPTS as usize
    );
}

#[test]
fn removing_a_life_that_is_already_gone_is_fine() {
    let k = privileged_kernel();
    assert_eq!(
        remove(&privileged_plan(), &k).unwrap(),
        Vec::<PathBuf>::new()
    );
}

fn v1_plan(k: &Kernel) -> Plan {
    let mounts: String = k
        .roots
        .keys()
        .enumerate()
        .map(|(i, r)| {
            let name = r.file_name().unwrap().to_str().unwrap();
            let (fs, opts) = if name == "unified" {
                ("cgroup2", "rw".to_owned())
            } else {
                ("cgroup", format!("rw,{name}"))
            };
            format!(
                "{} 1 0:{i} / {} rw - {fs} {fs} {opts}\n",
                40 + i,
                r.display()
            )
        })
        .collect();
    let cgroups: String = k
        .roots
        .keys()
        .map(|r| match r.file_name().unwrap().to_str().unwrap() {
            "unified" => "0::/\n".to_owned(),
            name => format!("1:{name}:/\n"),
        })
        .collect();
    plan(&v1_facts(), &parse_layout(&mounts, &cgroups, vec![]), 1).unwrap()
}

#[test]
fn v1_prepare_copies_cpuset_and_the_first_process_joins_every_hierarchy() {
    let k = Kernel::default()
        .hierarchy("/sys/fs/cgroup/cpu", &[])
        .hierarchy("/sys/fs/cgroup/cpuset", &[])
        .hierarchy("/sys/fs/cgroup/unified", &[])
        .cgroup("/sys/fs/cgroup/cpu", &[23])
        .cgroup("/sys/fs/cgroup/cpuset", &[23])
        .cgroup("/sys/fs/cgroup/unified", &[23])
        .file("/sys/fs/cgroup/cpuset/cpuset.cpus", "0-1\n")
        .file("/sys/fs/cgroup/cpuset/cpuset.mems", "0\n")
        .me(23);
    let p = v1_plan(&k);
    prepare(&p, &k).unwrap();
    assert_eq!(
        k.ops(),
        [
            "mkdir /sys/fs/cgroup/cpu/life-1",
            "mkdir /sys/fs/cgroup/cpuset/life-1",
            "write /sys/fs/cgroup/cpuset/life-1/cpuset.cpus 0-1",
            "write /sys/fs/cgroup/cpuset/life-1/cpuset.mems 0",
            "mkdir /sys/fs/cgroup/unified/life-1",
        ]
    );
    spawn_first_process(&k, "/sys/fs/cgroup/cpu");
    k.put("/sys/fs/cgroup/cpuset", &[40]);
    k.put("/sys/fs/cgroup/unified", &[40]);
    k.ops.borrow_mut().clear();
    join(&p, &k).unwrap();
    enter_leaf(&p, &k).unwrap();
    assert_eq!(enable(&p, &k).unwrap(), Delegation::default());
    assert_eq!(
        k.ops(),
        [
            "write /sys/fs/cgroup/cpu/life-1/cgroup.procs 0",
            "write /sys/fs/cgroup/cpuset/life-1/cgroup.procs 0",
            "write /sys/fs/cgroup/unified/life-1/cgroup.procs 0",
        ]
    );
    for h in ["cpu", "cpuset", "unified"] {
        assert_eq!(k.procs(&format!("/sys/fs/cgroup/{h}/life-1")), [40], "{h}");
        assert_eq!(k.procs(&format!("/sys/fs/cgroup/{h}")), [23], "{h}");
    }
}

#[test]
fn pauses_grow_by_10ms_up_to_100ms() {
    let all: Vec<u128> = (1..ATTEMPTS).map(|a| pause(a).as_millis()).collect();
    assert_eq!(all[..3], [10, 20, 30]);
    assert!(all.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(*all.last().unwrap(), 100);
}
