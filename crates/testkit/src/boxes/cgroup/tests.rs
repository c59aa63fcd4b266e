use super::*;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// This machine: cgroup v1 hybrid, the sandbox keeps us in a memory cgroup.
const V1_MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
const V1_CGROUP: &str = "\
9:name=systemd:/
4:memory:/process_api/462c
3:cpuset:/
1:cpu:/
0::/
";

/// GitHub's Ubuntu 24.04 runners: cgroup v2 only, the job in a systemd service.
const V2_MOUNTINFO: &str = "\
24 1 8:1 / / rw,relatime shared:1 - ext4 /dev/root rw,discard
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
const V2_CGROUP: &str = "0::/system.slice/runner.service\n";

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

fn req(kind: BoxKind, uid: u32, parent: CgroupParent) -> Request<'static> {
    Request {
        kind,
        name: "sysrunner-box-3",
        uid,
        gid: uid,
        parent,
    }
}

fn no_files(_: &Path) -> Option<String> {
    None
}

fn chown(path: &str, uid: u32) -> Step {
    Step::Chown {
        path: p(path),
        uid,
        gid: uid,
    }
}

#[test]
fn v1_hybrid_layout_lists_every_mounted_hierarchy_and_the_unified_one() {
    let l = parse(V1_MOUNTINFO, V1_CGROUP).unwrap();
    let Layout::V1 { hierarchies } = &l else {
        panic!("{l:?}")
    };
    let seen: Vec<(&Path, Version, Vec<String>)> = hierarchies
        .iter()
        .map(|h| (h.mount_point.as_path(), h.version, h.controllers.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                Path::new("/sys/fs/cgroup/systemd"),
                Version::V1,
                vec!["name=systemd".to_owned()]
            ),
            (
                Path::new("/sys/fs/cgroup/memory"),
                Version::V1,
                vec!["memory".to_owned()]
            ),
            (
                Path::new("/sys/fs/cgroup/cpuset"),
                Version::V1,
                vec!["cpuset".to_owned()]
            ),
            (
                Path::new("/sys/fs/cgroup/cpu"),
                Version::V1,
                vec!["cpu".to_owned()]
            ),
            (Path::new("/sys/fs/cgroup/unified"), Version::V2, vec![]),
        ]
    );
    assert_eq!(l.own_dirs()[1], p("/sys/fs/cgroup/memory/process_api/462c"));
}

#[test]
fn v1_sysbox_like_plan_makes_chowns_and_binds_one_dir_per_hierarchy() {
    let l = parse(V1_MOUNTINFO, V1_CGROUP).unwrap();
    let plan = plan(
        &l,
        &req(BoxKind::SysboxLike, 165536, CgroupParent::Own),
        &no_files,
    )
    .unwrap();
    let d = |c: &str| format!("/sys/fs/cgroup/{c}/sysrunner-box-3");
    let mem = "/sys/fs/cgroup/memory/process_api/462c/sysrunner-box-3";
    let contents = |dir: &str| Step::ChownContents {
        dir: p(dir),
        uid: 165536,
        gid: 165536,
    };
    assert_eq!(
        plan.prepare,
        vec![
            Step::Mkdir(p(&d("systemd"))),
            contents(&d("systemd")),
            Step::Mkdir(p(mem)),
            contents(mem),
            Step::Mkdir(p(&d("cpuset"))),
            Step::CopyFile {
                from: p("/sys/fs/cgroup/cpuset/cpuset.cpus"),
                to: p(&format!("{}/cpuset.cpus", d("cpuset"))),
            },
            Step::CopyFile {
                from: p("/sys/fs/cgroup/cpuset/cpuset.mems"),
                to: p(&format!("{}/cpuset.mems", d("cpuset"))),
            },
            contents(&d("cpuset")),
            Step::Mkdir(p(&d("cpu"))),
            contents(&d("cpu")),
            // The hybrid unified hierarchy is cgroup2: only the delegation files change hands.
            Step::Mkdir(p(&d("unified"))),
            chown(&d("unified"), 165536),
            chown(&format!("{}/cgroup.procs", d("unified")), 165536),
            chown(&format!("{}/cgroup.subtree_control", d("unified")), 165536),
            chown(&format!("{}/cgroup.threads", d("unified")), 165536),
        ]
    );
    let dirs = [
        d("systemd"),
        mem.to_owned(),
        d("cpuset"),
        d("cpu"),
        d("unified"),
    ];
    let procs: Vec<PathBuf> = dirs.iter().map(|x| p(x).join("cgroup.procs")).collect();
    assert_eq!(plan.join, procs);
    assert_eq!(plan.exec_join, procs);
    assert!(plan.join_after_unshare.is_empty());
    assert_eq!(plan.dirs, dirs.iter().map(|x| p(x)).collect::<Vec<_>>());
    assert_eq!(
        plan.binds[1],
        (p(mem), p("/sys/fs/cgroup/memory")),
        "the box sees its own dir as the hierarchy's root"
    );
}

#[test]
fn v1_privileged_like_plan_changes_no_owner_and_root_parent_ignores_own_cgroup() {
    let l = parse(V1_MOUNTINFO, V1_CGROUP).unwrap();
    let plan = plan(
        &l,
        &req(BoxKind::PrivilegedLike, 0, CgroupParent::Root),
        &no_files,
    )
    .unwrap();
    assert!(
        !plan
            .prepare
            .iter()
            .any(|s| matches!(s, Step::Chown { .. } | Step::ChownContents { .. })),
        "{:?}",
        plan.prepare
    );
    assert!(
        plan.dirs
            .contains(&p("/sys/fs/cgroup/memory/sysrunner-box-3"))
    );
}

#[test]
fn v2_sysbox_like_plan_delegates_one_dir_and_parks_processes_in_init_scope() {
    let l = parse(V2_MOUNTINFO, V2_CGROUP).unwrap();
    assert!(matches!(l, Layout::V2 { .. }), "{l:?}");
    let parent = "/sys/fs/cgroup/system.slice/runner.service";
    let files: BTreeMap<PathBuf, &str> = [
        (
            p(&format!("{parent}/cgroup.controllers")),
            "cpu io memory pids\n",
        ),
        (p(&format!("{parent}/cgroup.subtree_control")), "memory\n"),
    ]
    .into();
    let read = |q: &Path| files.get(q).map(|s| s.to_string());
    let plan = plan(
        &l,
        &req(BoxKind::SysboxLike, 100000, CgroupParent::Own),
        &read,
    )
    .unwrap();
    let d = format!("{parent}/sysrunner-box-3");
    let s = format!("{d}/init.scope");
    assert_eq!(
        plan.notes,
        vec![format!(
            "{parent} does not enable cpu io pids for its children: the box cannot use them"
        )]
    );
    assert_eq!(
        plan.prepare,
        vec![
            Step::Mkdir(p(&d)),
            Step::Mkdir(p(&s)),
            chown(&d, 100000),
            chown(&format!("{d}/cgroup.procs"), 100000),
            chown(&format!("{d}/cgroup.subtree_control"), 100000),
            chown(&format!("{d}/cgroup.threads"), 100000),
            chown(&s, 100000),
            chown(&format!("{s}/cgroup.procs"), 100000),
            chown(&format!("{s}/cgroup.subtree_control"), 100000),
            chown(&format!("{s}/cgroup.threads"), 100000),
        ]
    );
    // The namespace is rooted at the box's dir, the processes sit one below it: 0::/init.scope.
    assert_eq!(plan.join, vec![p(&format!("{d}/cgroup.procs"))]);
    assert_eq!(
        plan.join_after_unshare,
        vec![p(&format!("{s}/cgroup.procs"))]
    );
    assert_eq!(plan.exec_join, plan.join_after_unshare);
    assert_eq!(plan.binds, vec![(p(&d), p("/sys/fs/cgroup"))]);
    assert_eq!(plan.dirs, vec![p(&d)]);
}

#[test]
fn v2_privileged_like_plan_keeps_processes_at_the_namespace_root() {
    let l = parse(V2_MOUNTINFO, V2_CGROUP).unwrap();
    let files: BTreeMap<PathBuf, &str> = [
        (p("/sys/fs/cgroup/cgroup.controllers"), "cpu memory pids"),
        (
            p("/sys/fs/cgroup/cgroup.subtree_control"),
            "cpu memory pids",
        ),
    ]
    .into();
    let read = |q: &Path| files.get(q).map(|s| s.to_string());
    let plan = plan(
        &l,
        &req(BoxKind::PrivilegedLike, 0, CgroupParent::Root),
        &read,
    )
    .unwrap();
    let d = p("/sys/fs/cgroup/sysrunner-box-3");
    assert_eq!(plan.prepare, vec![Step::Mkdir(d.clone())]);
    assert!(plan.notes.is_empty(), "{:?}", plan.notes);
    assert_eq!(plan.join, vec![d.join("cgroup.procs")]);
    assert!(plan.join_after_unshare.is_empty());
    assert_eq!(plan.exec_join, plan.join);
}

#[test]
fn auto_nests_under_the_own_cgroup_on_v1_and_under_the_root_on_v2() {
    let v1 = parse(V1_MOUNTINFO, V1_CGROUP).unwrap();
    let plan1 = plan(
        &v1,
        &req(BoxKind::SysboxLike, 1, CgroupParent::Auto),
        &no_files,
    )
    .unwrap();
    assert!(
        plan1
            .dirs
            .contains(&p("/sys/fs/cgroup/memory/process_api/462c/sysrunner-box-3"))
    );
    let v2 = parse(V2_MOUNTINFO, V2_CGROUP).unwrap();
    let plan2 = plan(
        &v2,
        &req(BoxKind::SysboxLike, 1, CgroupParent::Auto),
        &no_files,
    )
    .unwrap();
    assert_eq!(plan2.dirs, vec![p("/sys/fs/cgroup/sysrunner-box-3")]);
}

#[test]
fn co_mounted_controllers_form_one_hierarchy() {
    let mi = "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
    let l = parse(mi, "2:cpu,cpuacct:/user.slice\n").unwrap();
    let Layout::V1 { hierarchies } = l else {
        panic!()
    };
    assert_eq!(hierarchies.len(), 1);
    assert_eq!(hierarchies[0].controllers, vec!["cpu", "cpuacct"]);
    assert_eq!(
        hierarchies[0].own_dir(),
        p("/sys/fs/cgroup/cpu,cpuacct/user.slice")
    );
}

#[test]
fn a_mount_of_a_sub_cgroup_maps_the_own_path_below_it() {
    let mi = "35 24 0:30 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    let l = parse(mi, "0::/docker/abc/init\n").unwrap();
    assert_eq!(l.own_dirs(), vec![p("/sys/fs/cgroup/init")]);
    let err = parse(mi, "0::/elsewhere\n").unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
}

#[test]
fn unmounted_hierarchies_are_left_out_and_no_cgroup_at_all_is_an_error() {
    let l = parse(V1_MOUNTINFO, "12:rdma:/\n1:cpu:/\n").unwrap();
    assert_eq!(l.hierarchies().len(), 1);
    assert!(parse("27 1 254:0 / / rw - ext4 /dev/vda rw\n", "0::/\n").is_err());
}

#[test]
fn mountinfo_escapes_are_decoded() {
    assert_eq!(unescape(r"/mnt/a\040b\134c"), "/mnt/a b\\c");
    assert_eq!(unescape(r"/x\04"), r"/x\04");
}

#[test]
fn box_names_are_single_plain_components() {
    let l = parse(V2_MOUNTINFO, V2_CGROUP).unwrap();
    for bad in ["", "..", "a/b", "a b"] {
        let r = Request {
            name: bad,
            ..req(BoxKind::SysboxLike, 1, CgroupParent::Own)
        };
        assert!(plan(&l, &r, &no_files).is_err(), "{bad:?}");
    }
}

/// Records what the executor does; fails the paths it is told to.
#[derive(Default)]
struct Recorder {
    log: RefCell<Vec<String>>,
    fail: Vec<PathBuf>,
    entries: Vec<PathBuf>,
}

impl Recorder {
    fn check(&self, op: &str, path: &Path) -> io::Result<()> {
        self.log
            .borrow_mut()
            .push(format!("{op} {}", path.display()));
        if self.fail.iter().any(|f| f == path) {
            Err(io::Error::from_raw_os_error(16))
        } else {
            Ok(())
        }
    }
}

impl CgroupFs for Recorder {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        self.check("mkdir", path)
    }
    fn read(&self, path: &Path) -> io::Result<String> {
        self.check("read", path).map(|_| "0-1\n".into())
    }
    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        self.check(&format!("write {contents:?} to"), path)
    }
    fn chown(&self, path: &Path, uid: u32, _gid: u32) -> io::Result<()> {
        self.check(&format!("chown {uid}"), path)
    }
    fn entries(&self, _dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(self.entries.clone())
    }
}

#[test]
fn the_executor_copies_trimmed_values_chowns_contents_and_stops_at_the_first_failure() {
    let fs = Recorder {
        entries: vec![p("/cg/b/cgroup.procs"), p("/cg/b/tasks")],
        ..Default::default()
    };
    let steps = vec![
        Step::Mkdir(p("/cg/b")),
        Step::CopyFile {
            from: p("/cg/cpuset.cpus"),
            to: p("/cg/b/cpuset.cpus"),
        },
        Step::ChownContents {
            dir: p("/cg/b"),
            uid: 7,
            gid: 7,
        },
    ];
    apply(&fs, &steps).unwrap();
    assert_eq!(
        fs.log.into_inner(),
        vec![
            "mkdir /cg/b",
            "read /cg/cpuset.cpus",
            "write \"0-1\" to /cg/b/cpuset.cpus",
            "chown 7 /cg/b",
            "chown 7 /cg/b/cgroup.procs",
            "chown 7 /cg/b/tasks",
        ]
    );

    let fs = Recorder {
        fail: vec![p("/cg/b")],
        ..Default::default()
    };
    let err = apply(&fs, &steps).unwrap_err();
    assert!(err.to_string().contains("mkdir /cg/b"), "{err}");
    assert_eq!(fs.log.into_inner(), vec!["mkdir /cg/b"]);
}

#[test]
fn join_writes_the_pid_into_every_procs_file() {
    let fs = Recorder::default();
    join(&fs, &[p("/a/cgroup.procs"), p("/b/cgroup.procs")], 42).unwrap();
    assert_eq!(
        fs.log.into_inner(),
        vec![
            "write \"42\" to /a/cgroup.procs",
            "write \"42\" to /b/cgroup.procs"
        ]
    );
}
