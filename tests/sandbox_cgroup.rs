//! The life's cgroup against the real kernel, inside a throwaway cgroup of the test's own in every
//! hierarchy (made under the test process's own cgroups, removed at the end, also after a panic;
//! no other cgroup is written). prepare → a child that joins, unshares its cgroup namespace,
//! enters its leaf, reports `/proc/thread-self/cgroup` and mounts the life's `/sys/fs/cgroup` in a
//! private mount namespace → enable → remove, and nothing is left.
//!
//! This machine is cgroup v1 hybrid: the v1 test runs the whole v1 path. The v2 path runs on the
//! hybrid's `unified` hierarchy, which has no controllers, so it proves the tree, the namespace
//! root, the leaf, the fresh cgroup2 mount and the removal, but not the controller delegation
//! (the unit tests' fake kernel covers that; pure v2 hosts run it live in the hosted CI leg).
//!
//! The child is this test binary run again for [`zz_child_process_entry`]: a fresh exec, so the
//! steps the life's first process takes run in a process of their own, not in a fork of the
//! multithreaded test harness. Needs root; skips (or fails in CI) through `testkit::require`.

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use sysrunner::probe::{self, CgroupVersion, Facts};
use sysrunner::sandbox::cgroup::{
    self, Fs, HostFs, Layout, Plan, Tree, enable, enter_leaf, inner_mounts, join, perform_inner,
    prepare, remove,
};
use sysrunner_testkit::{self as testkit, Need};

const NEEDS: [Need; 2] = [Need::Root, Need::Cgroups];
/// Set for the child: the JSON of what it does.
const CHILD_ENV: &str = "SYSRUNNER_TEST_CGROUP_CHILD";
const CHILD_TEST: &str = "zz_child_process_entry";
/// What starts each line of the child's report.
const REPORT: &str = "@report ";

#[derive(serde::Serialize, serde::Deserialize)]
struct ChildTask {
    plan: Plan,
    /// Where the child mounts the life's `/sys/fs/cgroup` (below `<dir>/sys/fs/cgroup`).
    mount_root: PathBuf,
}

/// Not a test of its own: the entry of the child process the live tests start. Does nothing unless
/// [`CHILD_ENV`] is set.
#[test]
fn zz_child_process_entry() {
    let Ok(task) = std::env::var(CHILD_ENV) else {
        return;
    };
    let task: ChildTask = serde_json::from_str(&task).unwrap();
    let fs = HostFs::default();
    // The harness has already written `test zz_child_process_entry ... ` without a newline: each
    // line carries a marker the parent looks for anywhere in it.
    let out = |line: String| {
        let mut o = std::io::stdout().lock();
        writeln!(o, "{REPORT}{line}").unwrap();
        o.flush().unwrap();
    };

    join(&task.plan, &fs).unwrap();
    // Namespaces are per thread: everything below runs on this test's thread, and reads
    // /proc/thread-self.
    unshare(CloneFlags::CLONE_NEWCGROUP).unwrap();
    enter_leaf(&task.plan, &fs).unwrap();
    for l in std::fs::read_to_string("/proc/thread-self/cgroup")
        .unwrap()
        .lines()
    {
        out(format!("cg {l}"));
    }

    unshare(CloneFlags::CLONE_NEWNS).unwrap();
    // Nothing mounted here may reach the test's own mount namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap();
    let root = &task.mount_root;
    std::fs::create_dir_all(root.join("sys/fs/cgroup")).unwrap();
    perform_inner(&inner_mounts(&task.plan), root).unwrap();
    let under = root.join("sys/fs/cgroup");
    for l in std::fs::read_to_string("/proc/thread-self/mountinfo")
        .unwrap()
        .lines()
    {
        let f: Vec<&str> = l.split(' ').collect();
        let (mroot, point) = (f[3], f[4]);
        if Path::new(point).starts_with(&under) {
            let fstype = l.split(" - ").nth(1).unwrap().split(' ').next().unwrap();
            let rel = Path::new(point).strip_prefix(root).unwrap().display();
            out(format!("mnt /{rel} {fstype} {mroot}"));
        }
    }
    for e in std::fs::read_dir(&under).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(e.path()).unwrap();
            out(format!("link {name} {}", target.display()));
        } else if meta.is_dir() {
            // v1: a hierarchy's mount point, and the child cgroups its fresh mount shows; v2: a
            // child cgroup of the life's root.
            let mut kids: Vec<String> = std::fs::read_dir(e.path())
                .unwrap()
                .filter_map(|k| k.ok())
                .filter(|k| k.file_type().is_ok_and(|t| t.is_dir()))
                .map(|k| k.file_name().to_string_lossy().into_owned())
                .collect();
            kids.sort();
            out(format!("dir {name} {}", kids.join(",")));
        }
    }
    out("ready".into());
    // Stay in the life until the test has enabled its controllers.
    let mut rest = String::new();
    std::io::stdin().read_to_string(&mut rest).unwrap();
}

/// The throwaway parent in every hierarchy, and the child; removed and killed on drop.
struct Scratch {
    /// (hierarchy mount point, our throwaway cgroup directory)
    dirs: Vec<PathBuf>,
    child: Option<Child>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in &self.dirs {
            rmdir_tree(d);
        }
    }
}

fn rmdir_tree(d: &Path) {
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(d);
}

/// This process's cgroup directory in a hierarchy.
fn own_dir(h: &cgroup::Hierarchy) -> PathBuf {
    let own = h.own.as_deref().expect("listed in /proc/self/cgroup");
    h.mount_point.join(
        Path::new(own)
            .strip_prefix(&h.mount_root)
            .expect("under the mount"),
    )
}

/// Makes `<own>/<name>` in each hierarchy of `layout` and returns the layout as sysrunner would
/// read it if it lived there.
fn scratch_layout(layout: &Layout, name: &str, scratch: &mut Scratch) -> Layout {
    let mut moved = layout.clone();
    for h in &mut moved.hierarchies {
        let dir = own_dir(h).join(name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        scratch.dirs.push(dir.clone());
        if h.options.iter().any(|o| o == "cpuset") {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let v = std::fs::read_to_string(dir.parent().unwrap().join(f)).unwrap();
                std::fs::write(dir.join(f), v.trim()).unwrap();
            }
        }
        let own = h.own.as_deref().unwrap().trim_end_matches('/');
        h.own = Some(format!("{own}/{name}"));
    }
    moved
}

fn start_child(plan: &Plan, mount_root: &Path) -> Child {
    let task = serde_json::to_string(&ChildTask {
        plan: plan.clone(),
        mount_root: mount_root.to_owned(),
    })
    .unwrap();
    Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, task)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The child's report, up to "ready" (or its end, if it failed first). The rest of its output is
/// drained on a thread: the child's harness still writes its summary, and a closed pipe would
/// fail it.
fn read_report(child: &mut Child) -> Vec<String> {
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lines = Vec::new();
    for l in out.by_ref() {
        let l = l.unwrap();
        let Some((_, line)) = l.split_once(REPORT) else {
            continue;
        };
        lines.push(line.to_owned());
        if line == "ready" {
            break;
        }
    }
    std::thread::spawn(move || out.for_each(drop));
    lines
}

fn finish_child(scratch: &mut Scratch) {
    let mut child = scratch.child.take().unwrap();
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "child: {status}");
}

/// Every directory below `dir` (none is a leftover only if this is empty).
fn subdirs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn unique(tag: &str) -> String {
    format!("sysrunner-test-{tag}-{}", std::process::id())
}

#[test]
fn v1_life_joins_its_own_cgroups_sees_them_as_root_and_leaves_nothing() {
    if !testkit::require("v1 life cgroup", &NEEDS) {
        return;
    }
    let facts = probe::read_facts(Path::new("/"));
    if facts.cgroup.version != Some(CgroupVersion::V1) {
        // The hosted v2 leg: the v2 test below covers this machine's kind.
        eprintln!("skipping the v1 life cgroup test: this host is not cgroup v1");
        return;
    }
    let layout = cgroup::read_layout(Path::new("/"));
    let mut scratch = Scratch {
        dirs: vec![],
        child: None,
    };
    let name = unique("v1");
    let layout = scratch_layout(&layout, &name, &mut scratch);
    let plan = cgroup::plan(&facts, &layout, 1).unwrap();
    let Tree::V1(tree) = &plan.tree else {
        panic!("{plan:?}")
    };
    let fs = HostFs::default();

    prepare(&plan, &fs).unwrap();
    for c in &tree.cgroups {
        assert!(c.life.is_dir(), "{}", c.life.display());
        if c.cpuset {
            let cpus = std::fs::read_to_string(c.life.join("cpuset.cpus")).unwrap();
            assert!(!cpus.trim().is_empty(), "an empty cpuset admits no task");
        }
    }

    let mount_root = tempfile::tempdir().unwrap();
    scratch.child = Some(start_child(&plan, mount_root.path()));
    let child = scratch.child.as_mut().unwrap();
    let pid = child.id();
    let report = read_report(child);
    assert_eq!(
        report.last().map(String::as_str),
        Some("ready"),
        "{report:#?}"
    );

    // From outside: the child is in life-1 of every hierarchy, below our throwaway parent.
    let outside = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for h in &layout.hierarchies {
        let want = format!("{}/life-1", h.own.as_deref().unwrap());
        let field = if h.fs == Fs::Cgroup2 {
            String::new()
        } else {
            h.options.join(",")
        };
        assert!(
            outside
                .lines()
                .any(|l| l.split_once(':').map(|x| x.1) == Some(&format!("{field}:{want}"))),
            "{field}: {want} not in\n{outside}"
        );
    }
    // From inside: each is the root of its namespace.
    let inside: Vec<&String> = report.iter().filter(|l| l.starts_with("cg ")).collect();
    assert_eq!(inside.len(), tree.cgroups.len(), "{report:#?}");
    for l in &inside {
        assert!(l.ends_with(":/"), "{l}");
    }
    // The fresh mounts show the namespace root (mountinfo root `/`), one per hierarchy, on the
    // tmpfs, with the host's symlinks.
    let mounts: Vec<&String> = report.iter().filter(|l| l.starts_with("mnt ")).collect();
    assert_eq!(mounts.len(), tree.cgroups.len() + 1, "{report:#?}");
    assert!(
        mounts[0].starts_with("mnt /sys/fs/cgroup tmpfs "),
        "{mounts:?}"
    );
    for (m, c) in mounts[1..].iter().zip(&tree.cgroups) {
        let fstype = if c.fs == Fs::Cgroup2 {
            "cgroup2"
        } else {
            "cgroup"
        };
        assert_eq!(**m, format!("mnt {} {fstype} /", c.mount_point.display()));
    }
    for l in &tree.links {
        assert!(
            report.contains(&format!("link {} {}", l.name, l.target)),
            "{report:#?}"
        );
    }
    // No cgroup below the life's root yet: the fresh mounts show no child cgroup.
    for l in report.iter().filter(|l| l.starts_with("dir ")) {
        assert!(l.ends_with(' '), "{l}");
    }

    let d = enable(&plan, &fs).unwrap();
    assert!(d.enabled.is_empty() && d.refused.is_empty(), "v1: {d:?}");
    finish_child(&mut scratch);

    let removed = remove(&plan, &fs).unwrap();
    assert_eq!(removed.len(), tree.cgroups.len());
    for (c, parent) in tree.cgroups.iter().zip(&scratch.dirs) {
        assert!(!c.life.exists(), "{}", c.life.display());
        assert!(subdirs(parent).is_empty(), "{}", parent.display());
    }
    // Removing again finds nothing to do.
    assert!(remove(&plan, &fs).unwrap().is_empty());
}

#[test]
fn v2_life_on_the_unified_hierarchy_gets_its_leaf_and_a_fresh_cgroup2() {
    if !testkit::require("v2 life cgroup", &NEEDS) {
        return;
    }
    let full = cgroup::read_layout(Path::new("/"));
    // On a pure v2 host the whole tree is the one cgroup2; on a hybrid one it is `unified`.
    let Some(unified) = full
        .hierarchies
        .iter()
        .find(|h| h.fs == Fs::Cgroup2)
        .cloned()
    else {
        eprintln!("skipping the v2 life cgroup test: no cgroup2 hierarchy is mounted");
        return;
    };
    let mut facts = Facts::default();
    facts.cgroup.version = Some(CgroupVersion::V2);
    facts.cgroup.rw = true;
    let mut scratch = Scratch {
        dirs: vec![],
        child: None,
    };
    let name = unique("v2");
    let layout = scratch_layout(
        &Layout {
            hierarchies: vec![unified],
            ..Layout::default()
        },
        &name,
        &mut scratch,
    );
    let plan = cgroup::plan(&facts, &layout, 1).unwrap();
    let Tree::V2(tree) = &plan.tree else {
        panic!("{plan:?}")
    };
    assert_eq!(tree.parent, scratch.dirs[0]);
    let fs = HostFs::default();

    let prepared = prepare(&plan, &fs).unwrap();
    assert!(tree.leaf.is_dir());
    // What this hierarchy has to hand down (nothing on a hybrid host) is handed down, and no
    // process had to move: ours is elsewhere.
    assert!(prepared.moved.is_empty(), "{prepared:?}");
    assert!(!tree.evacuate_to.exists());

    let mount_root = tempfile::tempdir().unwrap();
    scratch.child = Some(start_child(&plan, mount_root.path()));
    let child = scratch.child.as_mut().unwrap();
    let pid = child.id();
    let report = read_report(child);
    assert_eq!(
        report.last().map(String::as_str),
        Some("ready"),
        "{report:#?}"
    );

    let procs = |d: &Path| std::fs::read_to_string(d.join("cgroup.procs")).unwrap();
    assert_eq!(procs(&tree.leaf).trim(), pid.to_string());
    assert_eq!(
        procs(&tree.life).trim(),
        "",
        "the namespace root holds no process"
    );
    assert!(
        report.contains(&"cg 0::/init".to_owned()),
        "the leaf, seen from inside: {report:#?}"
    );
    assert!(
        report.contains(&"mnt /sys/fs/cgroup cgroup2 /".to_owned()),
        "{report:#?}"
    );
    let dirs: Vec<&String> = report.iter().filter(|l| l.starts_with("dir ")).collect();
    assert_eq!(dirs, ["dir init "], "the fresh mount shows the life's root");

    let d = enable(&plan, &fs).unwrap();
    let available = std::fs::read_to_string(tree.life.join("cgroup.controllers")).unwrap();
    assert_eq!(
        d.enabled.join(" "),
        available.trim(),
        "every controller life-1 has is handed down"
    );
    finish_child(&mut scratch);

    let removed = remove(&plan, &fs).unwrap();
    assert_eq!(removed, [tree.leaf.clone(), tree.life.clone()]);
    assert!(
        subdirs(&tree.parent).is_empty(),
        "{:?}",
        subdirs(&tree.parent)
    );
}
