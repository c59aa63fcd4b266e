//! The namespace boxes against the real kernel, the real `sysrunner` binary and the real dockerd:
//! what a box looks like from inside, that dockerd runs containers in both kinds (on the box's own
//! data root also where the host has a `/var/lib/docker`), that a Docker tmpfs is mounted as
//! Docker mounts it, and that nothing is left on the host afterwards, also when a test panics.
//! Needs root; skips (or fails in CI) through `testkit::require`.

use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use sysrunner_testkit::boxes::{
    self, Container, Layout, RestartMode, Version, signal, wait_within,
};
use sysrunner_testkit::{self as testkit, BoxKind, Need, TestBox, docker, image};

const EXE: &str = env!("CARGO_BIN_EXE_sysrunner");
const BOX: [Need; 4] = [
    Need::Root,
    Need::UserNamespaces,
    Need::Cgroups,
    Need::Overlay,
];

fn start(kind: BoxKind) -> TestBox {
    TestBox::builder(kind)
        .sysrunner(EXE)
        .start()
        .unwrap_or_else(|e| panic!("{kind:?} box: {e}"))
}

fn sh(b: &TestBox, script: &str) -> String {
    b.run_shell(script)
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .to_owned()
}

fn host_line(file: &str, key: &str) -> String {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
        .unwrap()
}

/// Everything the identity tests check, for either kind.
fn looks_like_a_container(kind: BoxKind) {
    let b = start(kind);
    assert_eq!(sh(&b, "id -u; id -g"), "0\n0");
    let map = b.id_map();
    let want = format!("{} {} {}", map.inside, map.outside, map.count);
    for f in ["uid_map", "gid_map"] {
        let got = sh(&b, &format!("cat /proc/self/{f}"));
        assert_eq!(
            got.split_whitespace().collect::<Vec<_>>().join(" "),
            want,
            "{f}"
        );
    }
    let cap_eff = sh(&b, "grep ^CapEff: /proc/self/status | cut -f2");
    let full = match kind {
        // A new user namespace starts with every capability the kernel knows.
        BoxKind::SysboxLike => {
            let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            format!("{:016x}", (1u64 << (last + 1)) - 1)
        }
        // Real root keeps the host's bounding set (this machine's lacks CAP_SYS_RESOURCE).
        BoxKind::PrivilegedLike => host_line("/proc/self/status", "CapBnd:"),
    };
    assert_eq!(cap_eff, full, "CapEff");
    let host_pidns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let box_pidns = sh(&b, "readlink /proc/self/ns/pid");
    assert_ne!(Path::new(&box_pidns), host_pidns, "own pid namespace");
    assert!(
        sh(&b, "cat /proc/1/cmdline | tr '\\0' ' '").contains("box-init"),
        "PID 1 is the box's init"
    );
    let host_user = std::fs::read_link("/proc/self/ns/user").unwrap();
    let box_user = sh(&b, "readlink /proc/self/ns/user");
    assert_eq!(
        Path::new(&box_user) == host_user,
        kind == BoxKind::PrivilegedLike,
        "user namespace"
    );
    assert_eq!(sh(&b, "hostname"), b.name());
    assert_eq!(sh(&b, "ip -o link show | wc -l"), "1", "only lo");
    assert!(sh(&b, "ip -o link show lo").contains(",UP"), "lo is up");
    // Every process sits at its cgroup namespace's root, except under sysbox on cgroup v2,
    // which parks them one level down so the root may hand controllers to dockerd's children.
    let layout = boxes::detect_cgroups(Path::new("/")).unwrap();
    let v2_sysbox = matches!(layout, Layout::V2 { .. }) && kind == BoxKind::SysboxLike;
    for line in sh(&b, "cat /proc/self/cgroup").lines() {
        let want = if v2_sysbox { ":/init.scope" } else { ":/" };
        assert!(line.ends_with(want), "cgroup namespace root: {line}");
    }
    // Private, writable, owned by the box's root; the host's copies are elsewhere.
    for dir in [
        "/var/lib/docker",
        "/etc/docker",
        "/run",
        "/tmp",
        "/opt/actions-runner",
        "/home/runner",
    ] {
        assert_eq!(sh(&b, &format!("stat -c %u {dir}")), "0", "{dir} owner");
        sh(&b, &format!("touch {dir}/written-by-box"));
    }
    assert!(b.paths().var_lib_docker.join("written-by-box").exists());
    assert!(b.paths().home.join("written-by-box").exists());
    assert!(b.in_box("/etc/docker/written-by-box").exists());
    assert!(!Path::new("/etc/docker/written-by-box").exists());
    assert!(!Path::new("/run/written-by-box").exists());
    assert_eq!(
        std::fs::metadata(&b.paths().var_lib_docker).unwrap().uid(),
        map.outside,
        "the host sees the box root's uid"
    );
    // The cgroups are the box's and writable by its root.
    for h in layout.hierarchies() {
        let probe = h.mount_point.join("probe");
        sh(&b, &format!("mkdir {0} && rmdir {0}", probe.display()));
    }
    assert_eq!(sh(&b, "echo $HOME"), boxes::HOME);
}

#[test]
fn a_sysbox_like_box_is_root_in_its_own_user_namespace_with_every_capability() {
    if testkit::require("sysbox-like identity", &BOX) {
        looks_like_a_container(BoxKind::SysboxLike);
    }
}

#[test]
fn a_privileged_like_box_is_real_root_with_the_hosts_capabilities() {
    if testkit::require("privileged-like identity", &BOX) {
        looks_like_a_container(BoxKind::PrivilegedLike);
    }
}

#[test]
fn parallel_boxes_get_their_own_names_ids_and_cgroups() {
    if !testkit::require("parallel boxes", &BOX) {
        return;
    }
    let a = start(BoxKind::SysboxLike);
    // The default binary lookup finds target/<profile>/sysrunner next to this test's deps/.
    let b = TestBox::new(BoxKind::SysboxLike).unwrap();
    assert_ne!(a.name(), b.name());
    assert_ne!(a.id_map().outside, b.id_map().outside);
    assert!(a.id_map().outside.abs_diff(b.id_map().outside) >= 65536);
    let dirs: BTreeSet<&PathBuf> = a.cgroup_dirs().iter().chain(b.cgroup_dirs()).collect();
    assert_eq!(dirs.len(), a.cgroup_dirs().len() * 2);
    assert_ne!(
        sh(&a, "readlink /proc/self/ns/net"),
        sh(&b, "readlink /proc/self/ns/net")
    );
}

#[test]
fn a_program_can_be_the_box_pid_1_after_the_hosts_extra_setup() {
    if !testkit::require("pid1 program", &BOX) {
        return;
    }
    let mut b = TestBox::builder(BoxKind::SysboxLike)
        .sysrunner(EXE)
        .pid1([
            "/bin/sh",
            "-c",
            "test $$ = 1 && test \"$(cat /run/from-host)\" = veth-moved && exit 7",
        ])
        // Stands in for moving a veth end into /proc/<pid>/ns/net.
        .before_start(|b| b.write_file("/run/from-host", "veth-moved"))
        .start()
        .unwrap();
    let status = b
        .wait(Duration::from_secs(60))
        .unwrap()
        .expect("PID 1 exits");
    assert_eq!(status.code(), Some(7));
}

#[test]
fn a_box_that_fails_to_start_says_why_and_leaves_nothing_behind() {
    if !testkit::require("failed start", &BOX) {
        return;
    }
    // A runner directory below a file: the overlay that would make its mount point fails in PID 1.
    let err = TestBox::builder(BoxKind::SysboxLike)
        .sysrunner(EXE)
        .runner_dir("/etc/passwd/runner")
        .start()
        .unwrap_err();
    assert!(matches!(err, boxes::Error::Setup(_)), "{err}");
    assert!(err.to_string().contains("/etc/passwd"), "{err}");

    // The host's own extra setup fails after the box is complete.
    let seen = std::rc::Rc::new(std::cell::RefCell::new(None));
    let record = seen.clone();
    let err = TestBox::builder(BoxKind::SysboxLike)
        .sysrunner(EXE)
        .before_start(move |b| {
            *record.borrow_mut() =
                Some((b.cgroup_dirs().to_vec(), b.paths().state.clone(), b.pid()));
            Err(boxes::Error::Invalid("no veth today".into()))
        })
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("no veth today"), "{err}");
    let (dirs, state, pid1) = seen.borrow_mut().take().expect("the hook ran");
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    assert!(!state.exists(), "{} left behind", state.display());
    assert!(!is_running(pid1.as_raw()));
}

#[test]
fn the_v2_plan_works_for_real_on_a_hybrid_hosts_unified_hierarchy() {
    if !testkit::require("v2 plan on the unified hierarchy", &BOX) {
        return;
    }
    let layout = boxes::detect_cgroups(Path::new("/")).unwrap();
    let unified = match &layout {
        Layout::V1 { hierarchies } => hierarchies.iter().find(|h| h.version == Version::V2),
        Layout::V2 { .. } => None,
    };
    let Some(unified) = unified.cloned() else {
        eprintln!("not a hybrid host: the other tests already run the v2 plan for real here");
        return;
    };
    for (kind, want) in [
        (BoxKind::SysboxLike, "0::/init.scope"),
        (BoxKind::PrivilegedLike, "0::/"),
    ] {
        let b = TestBox::builder(kind)
            .sysrunner(EXE)
            .cgroup_layout(Layout::V2 {
                hierarchy: unified.clone(),
            })
            .start()
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let cg = sh(&b, "grep ^0:: /proc/self/cgroup");
        assert_eq!(cg, want, "{kind:?}");
        // The delegation contract: the box's root makes a child cgroup and moves into it.
        let mp = unified.mount_point.display();
        let moved = sh(
            &b,
            &format!(
                "mkdir {mp}/job && echo $$ > {mp}/job/cgroup.procs && grep ^0:: /proc/self/cgroup"
            ),
        );
        assert_eq!(moved, "0::/job", "{kind:?}");
        let dirs = b.cgroup_dirs().to_vec();
        assert_eq!(dirs.len(), 1);
        drop(b);
        assert!(!dirs[0].exists(), "{} left behind", dirs[0].display());
    }
}

#[test]
fn a_panic_inside_a_test_still_removes_the_box() {
    if !testkit::require("panic cleanup", &BOX) {
        return;
    }
    let mut seen = None;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let b = start(BoxKind::SysboxLike);
        #[expect(
            clippy::zombie_processes,
            reason = "left unwaited on purpose, as a panicking test would"
        )]
        let sleeper = b.command("sleep").arg("1000").spawn().unwrap();
        // box-exec and the sleep it runs in the box.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut pids = b.pids().unwrap();
        while pids.len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            pids = b.pids().unwrap();
        }
        assert!(pids.contains(&(sleeper.id() as i32)), "{pids:?}");
        assert_eq!(pids.len(), 2, "{pids:?}");
        seen = Some((
            b.cgroup_dirs().to_vec(),
            b.paths().state.clone(),
            b.pid(),
            pids,
        ));
        // Its box-exec stays a zombie of this process, which must not keep the cgroups alive.
        panic!("on purpose, inside the box's scope");
    }));
    assert!(r.is_err());
    let (dirs, state, pid1, pids) = seen.expect("the box started");
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    assert!(!state.exists(), "{} left behind", state.display());
    assert!(!is_running(pid1.as_raw()), "the box's PID 1 still runs");
    for p in pids {
        assert!(!is_running(p), "the box's process {p} still runs");
    }
}

/// Alive and not a zombie.
fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

/// What dockerd would change on the host if it were not boxed: every entry below `/etc/docker`
/// and `/var/lib/docker`, and `/run`'s entries (their own inode and, for the ones dockerd,
/// containerd, runc and iptables create, everything below).
fn host_docker_state() -> Vec<String> {
    fn walk(p: &Path, deep: bool, out: &mut Vec<String>) {
        let Ok(m) = std::fs::symlink_metadata(p) else {
            out.push(format!("{} absent", p.display()));
            return;
        };
        out.push(format!(
            "{} ino={} mode={:o} uid={} mtime={}.{}",
            p.display(),
            m.ino(),
            m.mode(),
            m.uid(),
            m.mtime(),
            m.mtime_nsec()
        ));
        if m.is_dir() && deep {
            let mut names: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            names.sort();
            for n in names {
                walk(&n, deep, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/etc/docker"), true, &mut out);
    walk(Path::new("/var/lib/docker"), true, &mut out);
    let mut run: Vec<PathBuf> = std::fs::read_dir("/run")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    for name in [
        "docker",
        "docker.sock",
        "docker.pid",
        "containerd",
        "runc",
        "netns",
        "xtables.lock",
    ] {
        run.push(Path::new("/run").join(name));
    }
    run.sort();
    run.dedup();
    for p in run {
        let ours = p.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n.starts_with("docker")
                || n.starts_with("containerd")
                || ["runc", "netns", "xtables.lock"].contains(&&*n)
        });
        match std::fs::symlink_metadata(&p) {
            Ok(_) if ours => walk(&p, true, &mut out),
            Ok(m) => out.push(format!("{} ino={}", p.display(), m.ino())),
            Err(_) => out.push(format!("{} absent", p.display())),
        }
    }
    out
}

fn docker_cli(b: &TestBox, args: &str) -> String {
    sh(
        b,
        &format!("{} -H unix://{} {args}", docker::DOCKER, docker::SOCKET),
    )
}

fn dockerd_runs_containers(kind: BoxKind) {
    let _serial = testkit::serial();
    let before = host_docker_state();
    let t0 = Instant::now();
    let b = start(kind);
    let t_box = t0.elapsed();

    b.write_file("/etc/docker/daemon.json", docker::daemon_json(1400))
        .unwrap();
    let tar = b.paths().tmp.join("busybox.tar");
    image::write_busybox_rootfs(&tar).unwrap();
    let log_path = b.paths().state.join("dockerd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let t1 = Instant::now();
    let mut dockerd = b
        .command(docker::DOCKERD)
        .args(["--host", &format!("unix://{}", docker::SOCKET)])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let ping = docker::wait_for_ping(&b.in_box(docker::SOCKET), Duration::from_secs(120), || {
        matches!(dockerd.try_wait(), Ok(None))
    });
    if let Err(e) = ping {
        panic!("{e}\n--- dockerd log\n{}", log());
    }
    let t_ping = t1.elapsed();

    assert_eq!(docker_cli(&b, "info --format '{{.Driver}}'"), "overlay2");
    if kind == BoxKind::SysboxLike {
        assert!(
            log().to_lowercase().contains("user namespace"),
            "dockerd noticed its user namespace:\n{}",
            log()
        );
    }
    docker_cli(&b, &format!("import /tmp/busybox.tar {}", image::IMAGE));
    let t2 = Instant::now();
    docker_cli(&b, &format!("run --rm {} busybox true", image::IMAGE));
    let t_run = t2.elapsed();
    docker_cli(&b, "network create n1");
    let mtu = docker_cli(
        &b,
        &format!(
            "run --rm --network n1 {} cat /sys/class/net/eth0/mtu",
            image::IMAGE
        ),
    );
    assert_eq!(mtu, "1400", "MTU on a user-created network");
    let mtu = docker_cli(
        &b,
        &format!("run --rm {} cat /sys/class/net/eth0/mtu", image::IMAGE),
    );
    assert_eq!(mtu, "1400", "MTU on the default bridge");
    assert!(
        b.paths().var_lib_docker.join("overlay2").is_dir(),
        "the box's /var/lib/docker is the data root"
    );

    signal(dockerd.id(), Signal::SIGTERM).unwrap();
    let status = wait_within(&mut dockerd, Duration::from_secs(60))
        .unwrap()
        .unwrap_or_else(|| panic!("dockerd ignored SIGTERM\n{}", log()));
    assert!(status.success(), "dockerd: {status}\n{}", log());
    // containerd and shims are dockerd's children; give the kernel a moment to empty the cgroups.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut left = b.pids().unwrap();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = b.pids().unwrap();
    }
    assert!(left.is_empty(), "processes left in the box: {left:?}");

    let dirs = b.cgroup_dirs().to_vec();
    let state = b.paths().state.clone();
    let t3 = Instant::now();
    drop(b);
    let t_drop = t3.elapsed();
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    assert!(!state.exists(), "{} left behind", state.display());
    assert_eq!(
        host_docker_state(),
        before,
        "the host's docker paths changed"
    );
    eprintln!(
        "{kind:?}: box start {t_box:?}, dockerd until /_ping {t_ping:?}, first docker run {t_run:?}, teardown {t_drop:?}, total {:?}",
        t0.elapsed()
    );
}

#[test]
fn dockerd_runs_containers_in_a_sysbox_like_box_and_leaves_the_host_alone() {
    let mut needs = BOX.to_vec();
    needs.extend([Need::Dockerd, Need::Busybox]);
    if testkit::require("dockerd in a sysbox-like box", &needs) {
        dockerd_runs_containers(BoxKind::SysboxLike);
    }
}

#[test]
fn dockerd_runs_containers_in_a_privileged_like_box_and_leaves_the_host_alone() {
    let mut needs = BOX.to_vec();
    needs.extend([Need::Dockerd, Need::Busybox]);
    if testkit::require("dockerd in a privileged-like box", &needs) {
        dockerd_runs_containers(BoxKind::PrivilegedLike);
    }
}

#[test]
fn boxes_starting_while_others_tear_down_share_a_state_root_that_stays() {
    if !testkit::require("state root shared by boxes", &BOX) {
        return;
    }
    // CI once saw a start fail with "statfs <root>: No such file or directory": the last box's
    // teardown used to remove the empty root while another box was creating its directory
    // there. The root now outlives its boxes; here two threads start and stop boxes under one
    // root at the same time, so starts and teardowns interleave.
    let root = PathBuf::from(format!("/var/tmp/sysrunner-shared-{}", std::process::id()));
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let root = root.clone();
            std::thread::spawn(move || {
                for i in 0..4 {
                    let b = TestBox::builder(BoxKind::SysboxLike)
                        .sysrunner(EXE)
                        .state_root(&root)
                        .start()
                        .unwrap_or_else(|e| panic!("thread {t}, box {i}: {e}"));
                    assert_eq!(sh(&b, "echo up"), "up");
                    b.stop()
                        .unwrap_or_else(|e| panic!("thread {t}, box {i}: {e}"));
                    assert!(root.is_dir(), "the root went with box {i} of thread {t}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let left: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
    assert!(left.is_empty(), "boxes left {left:?}");
    std::fs::remove_dir(&root).unwrap();
}

/// Runs `f` on a thread with a mount namespace of its own, private from `/` down: what `f` mounts,
/// and every box it starts (their processes are spawned from that thread), sees; the rest of this
/// process and the host do not. unshare(CLONE_NEWNS) also unshares the thread's fs struct, so it
/// works in the multi-threaded test process.
fn in_private_mount_namespace<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                .expect("unshare a mount namespace for this thread");
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("make / rprivate in the thread's namespace");
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// What a test could change below the host's `/var/lib`: its own inode and mtime (an entry made
/// or removed there changes it), its entries, and everything below `/var/lib/docker` if that exists.
fn host_var_lib() -> Vec<String> {
    let meta = std::fs::metadata("/var/lib").unwrap();
    let mut out = vec![format!(
        "/var/lib ino={} mtime={}.{}",
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec()
    )];
    let mut names: Vec<String> = std::fs::read_dir("/var/lib")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    out.extend(names);
    out.extend(
        host_docker_state()
            .into_iter()
            .filter(|l| l.starts_with("/var/lib/docker")),
    );
    out
}

/// Gives this thread's mount namespace a `/var/lib/docker`, as on a machine where Docker has run,
/// without creating anything on the host: a tmpfs over the host's own when it has one, else an
/// overlay of `/var/lib` whose upper layer (holding `docker/`) is on a tmpfs. `leftovers` fills
/// it the way a stopped dockerd leaves it. The scratch tmpfs goes on an existing directory that
/// neither the box nor this test needs, and carries a marker the box must see.
fn give_the_namespace_a_var_lib_docker(leftovers: bool) -> PathBuf {
    use nix::mount::{MsFlags, mount};
    let scratch = ["/srv", "/media", "/mnt"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_dir())
        .expect("one of /srv, /media, /mnt for a scratch tmpfs");
    let tmpfs = |target: &Path| {
        mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("mode=755"),
        )
        .unwrap_or_else(|e| panic!("tmpfs on {}: {e}", target.display()))
    };
    tmpfs(scratch);
    let data = Path::new("/var/lib/docker");
    if data.is_dir() {
        tmpfs(data);
    } else {
        let (upper, work) = (scratch.join("upper"), scratch.join("work"));
        std::fs::create_dir_all(upper.join("docker")).unwrap();
        std::fs::create_dir(&work).unwrap();
        let opts = format!(
            "lowerdir=/var/lib,upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            "/var/lib",
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .unwrap_or_else(|e| panic!("overlay on /var/lib: {e}"));
    }
    assert!(data.is_dir(), "the namespace has /var/lib/docker");
    if leftovers {
        for d in ["containers", "overlay2/l", "image/overlay2", "volumes"] {
            std::fs::create_dir_all(data.join(d)).unwrap();
        }
        std::fs::write(data.join("engine-id"), "left-by-an-earlier-dockerd\n").unwrap();
    }
    let marker = scratch.join("sysrunner-private-namespace");
    std::fs::write(&marker, "").unwrap();
    marker
}

/// A box started where the host has `/var/lib/docker` (`leftovers`: not empty) still gives dockerd
/// the box's own, disk-backed data root, also with a private path beside it that the host lacks
/// (`/var/lib/sysrunner`, as the rig and the image have).
fn dockerd_gets_a_private_data_root_beside_a_host_var_lib_docker(kind: BoxKind, leftovers: bool) {
    let before = host_var_lib();
    let marker = in_private_mount_namespace(|| {
        let marker = give_the_namespace_a_var_lib_docker(leftovers);
        let b = TestBox::builder(kind)
            .sysrunner(EXE)
            .tmpfs("/var/lib/sysrunner")
            .start()
            .unwrap_or_else(|e| panic!("{kind:?} box: {e}"));
        // The box started from this thread's namespace, not the host's.
        sh(&b, &format!("test -e {}", marker.display()));
        assert_eq!(
            sh(&b, "ls -A /var/lib/docker"),
            "",
            "the box's data root is its own, not what the host has there"
        );
        let script = format!(
            "{} info --format 'driver={{{{.Driver}}}}'; echo fs=$(stat -f -c %T /var/lib/docker)",
            docker::DOCKER
        );
        let out = b
            .output(
                b.command(b.sysrunner_in_box())
                    .env("DOCKER_MTU", "1400")
                    .args(["dockerd-check", "--", "sh", "-c", &script]),
            )
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{kind:?}, leftovers {leftovers}:\n{stdout}\n{stderr}"
        );
        assert!(stdout.contains("dockerd: ready in"), "{stdout}");
        // sysrunner starts containerd and hands it to dockerd, which then starts none.
        assert!(
            stdout.contains("containerd started by sysrunner"),
            "{stdout}"
        );
        assert!(
            !stderr.contains("starting managed containerd"),
            "dockerd started its own containerd:\n{stderr}"
        );
        assert!(stdout.contains("driver=overlay2"), "{stdout}");
        assert!(
            !stdout.contains("fs=overlayfs") && stdout.contains("fs="),
            "the data root is not on overlayfs: {stdout}"
        );
        assert!(
            b.paths().var_lib_docker.join(".sysrunner.lock").exists(),
            "dockerd ran on the box's data root"
        );
        assert!(b.in_box("/var/lib/sysrunner").is_dir());
        marker
    });
    assert!(!marker.exists(), "the scratch tmpfs reached the host");
    assert_eq!(host_var_lib(), before, "the host's /var/lib changed");
}

#[test]
fn a_sysbox_like_box_keeps_its_data_root_private_when_the_host_has_var_lib_docker() {
    let mut needs = BOX.to_vec();
    needs.push(Need::Dockerd);
    if !testkit::require("private data root, sysbox-like", &needs) {
        return;
    }
    let _serial = testkit::serial();
    for leftovers in [false, true] {
        dockerd_gets_a_private_data_root_beside_a_host_var_lib_docker(
            BoxKind::SysboxLike,
            leftovers,
        );
    }
}

#[test]
fn a_privileged_like_box_keeps_its_data_root_private_when_the_host_has_var_lib_docker() {
    let mut needs = BOX.to_vec();
    needs.push(Need::Dockerd);
    if !testkit::require("private data root, privileged-like", &needs) {
        return;
    }
    let _serial = testkit::serial();
    for leftovers in [false, true] {
        dockerd_gets_a_private_data_root_beside_a_host_var_lib_docker(
            BoxKind::PrivilegedLike,
            leftovers,
        );
    }
}

/// The options of the mount on `path` in the box, as `/proc/mounts` lists them.
fn mount_options(b: &TestBox, path: &str) -> Vec<String> {
    let line = sh(b, &format!("grep '^tmpfs {path} tmpfs ' /proc/mounts"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.len(), 6, "one tmpfs on {path}: {line}");
    fields[3].split(',').map(str::to_owned).collect()
}

/// A binary copied to `/tmp` in the box, run: its exit code and stderr.
fn run_from_tmp(b: &TestBox) -> (Option<i32>, String) {
    let out = b
        .output(
            b.command("/bin/sh")
                .args(["-c", "cp /bin/true /tmp/true-copy && exec /tmp/true-copy"]),
        )
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn docker_tmpfs_is_mounted_as_docker_mounts_it(kind: BoxKind) {
    // `docker run --tmpfs /tmp` (compose: `tmpfs: [/tmp]`): rw,nosuid,nodev,noexec.
    let b = TestBox::builder(kind)
        .sysrunner(EXE)
        .tmpfs_docker("/tmp")
        .unwrap()
        .start()
        .unwrap_or_else(|e| panic!("{kind:?} box: {e}"));
    let (code, stderr) = run_from_tmp(&b);
    assert_eq!(
        code,
        Some(126),
        "{kind:?}: a binary in a noexec /tmp ran: {stderr}"
    );
    assert!(stderr.contains("Permission denied"), "{kind:?}: {stderr}");
    let opts = mount_options(&b, "/tmp");
    for want in ["rw", "nosuid", "nodev", "noexec"] {
        assert!(
            opts.iter().any(|o| o == want),
            "{kind:?}: {want} in {opts:?}"
        );
    }
    // No mode given: the kernel's 1777, which /proc/mounts does not list.
    assert_eq!(sh(&b, "stat -c %a /tmp"), "1777");
    drop(b);

    // `- /tmp:exec,mode=1777,size=64m`: executable, and the size the kernel enforces.
    let b = TestBox::builder(kind)
        .sysrunner(EXE)
        .tmpfs_docker("/tmp:exec,mode=1777,size=64m")
        .unwrap()
        .start()
        .unwrap_or_else(|e| panic!("{kind:?} box: {e}"));
    let (code, stderr) = run_from_tmp(&b);
    assert_eq!(code, Some(0), "{kind:?}: {stderr}");
    let opts = mount_options(&b, "/tmp");
    for want in ["rw", "nosuid", "nodev", "size=65536k"] {
        assert!(
            opts.iter().any(|o| o == want),
            "{kind:?}: {want} in {opts:?}"
        );
    }
    assert!(!opts.iter().any(|o| o == "noexec"), "{kind:?}: {opts:?}");
    // /proc/mounts leaves out a mode that is the kernel's default.
    assert_eq!(sh(&b, "stat -c %a /tmp"), "1777");
    // The harness's own tmpfs mounts stay as they were: executable.
    let run = mount_options(&b, "/run");
    assert!(!run.iter().any(|o| o == "noexec"), "{kind:?}: /run {run:?}");
}

#[test]
fn a_docker_tmpfs_in_a_sysbox_like_box_is_noexec_unless_the_spec_says_exec() {
    if testkit::require("docker tmpfs, sysbox-like", &BOX) {
        docker_tmpfs_is_mounted_as_docker_mounts_it(BoxKind::SysboxLike);
    }
}

#[test]
fn a_docker_tmpfs_in_a_privileged_like_box_is_noexec_unless_the_spec_says_exec() {
    if testkit::require("docker tmpfs, privileged-like", &BOX) {
        docker_tmpfs_is_mounted_as_docker_mounts_it(BoxKind::PrivilegedLike);
    }
}

#[test]
fn a_docker_tmpfs_spec_with_an_unknown_option_is_refused_before_any_box_starts() {
    let err = TestBox::builder(BoxKind::SysboxLike)
        .sysrunner(EXE)
        .tmpfs_docker("/tmp:exec,sized=1g")
        .err()
        .expect("refused");
    assert!(matches!(err, boxes::Error::Invalid(_)), "{err}");
    assert!(
        err.to_string().contains("unknown option \"sized\""),
        "{err}"
    );
}

/// A busybox image unpacked in a fresh directory (removed on drop): `<dir>/rootfs`, with an
/// nsswitch.conf (busybox's static glibc reads /etc/hosts, then DNS) and nothing else of the host.
fn busybox_tree() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("sysrunner-busybox-")
        .tempdir_in("/var/tmp")
        .unwrap();
    // tempdir is 0700: a mapped root must be able to enter it.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let tar = dir.path().join("busybox.tar");
    image::write_busybox_rootfs(&tar).unwrap();
    let tree = dir.path().join("rootfs");
    image::unpack(&tar, &tree).unwrap();
    std::fs::write(tree.join("etc/nsswitch.conf"), "hosts: files dns\n").unwrap();
    (dir, tree)
}

fn csh(c: &Container, script: &str) -> String {
    c.run_shell(script)
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .to_owned()
}

/// Whether `script` succeeds in the container, with its output for messages.
fn csh_ok(c: &Container, script: &str) -> (bool, String) {
    let out = c
        .output(c.command("/bin/sh").unwrap().args(["-c", script]))
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const OVERLAYFS_MAGIC: &str = "794c7630";

fn a_containers_root_is_an_overlay_of_the_image(kind: BoxKind) {
    let (dir, tree) = busybox_tree();
    let mut c = Container::builder(kind, &tree).idle().create().unwrap();
    c.start(&dir.path().join("start.log")).unwrap();
    // busybox's stat names no overlayfs: its magic number.
    assert_eq!(csh(&c, "stat -f -c %t /"), OVERLAYFS_MAGIC, "{kind:?}");
    assert!(
        csh(&c, "cat /proc/self/mountinfo").lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(4) == Some(&"/") && l.contains(" - overlay ")
        }),
        "{kind:?}: / is not an overlay mount"
    );
    // What the container writes lands in its layer, never in the image's tree.
    csh(&c, "echo written > /etc/written-in-the-container");
    assert!(c.upper().join("etc/written-in-the-container").is_file());
    assert!(!tree.join("etc/written-in-the-container").exists());
    // The kernel refuses an overlay whose upper layer is on / (overlayfs), as in every real
    // container; the same overlay with its layers on the /var/lib/docker volume mounts.
    let userxattr = if kind == BoxKind::SysboxLike {
        ",userxattr"
    } else {
        ""
    };
    let ovl = |base: &str| {
        format!(
            "mkdir -p {base}/u {base}/w /mnt/m && \
             mount -t overlay overlay -o lowerdir=/etc,upperdir={base}/u,workdir={base}/w{userxattr} /mnt/m && \
             umount /mnt/m"
        )
    };
    let (ok, out) = csh_ok(&c, &ovl("/scratch"));
    assert!(!ok, "{kind:?}: an upper layer on / was accepted: {out}");
    let (ok, out) = csh_ok(&c, &ovl("/var/lib/docker/ovl"));
    assert!(ok, "{kind:?}: an upper layer on the volume: {out}");
    // What a per-life sandbox inside the container needs (sandbox-facts §1, §2): no mount under
    // / is locked, so / binds non-recursively and is an overlay's lower layer (two levels of
    // overlay, the kernel's maximum), in a mount namespace of the container's own.
    let (ok, out) = csh_ok(
        &c,
        &format!(
            "unshare -m sh -c 'mkdir -p /mnt/b /mnt/r /var/lib/docker/life/u /var/lib/docker/life/w && \
             mount --bind / /mnt/b && \
             mount -t overlay overlay -o lowerdir=/,upperdir=/var/lib/docker/life/u,workdir=/var/lib/docker/life/w{userxattr} /mnt/r && \
             test -x /mnt/r/bin/busybox && test -f /mnt/r/etc/written-in-the-container && echo lower-is-root'"
        ),
    );
    assert!(ok && out.contains("lower-is-root"), "{kind:?}: {out}");
    assert_eq!(c.stop(Duration::from_secs(20)).unwrap().code(), Some(0));
    let state = c.upper().parent().unwrap().to_owned();
    c.remove().unwrap();
    assert!(!state.exists(), "{} left behind", state.display());
}

#[test]
fn a_sysbox_like_containers_root_is_an_overlay_of_the_image_with_its_layer_on_disk() {
    let mut needs = BOX.to_vec();
    needs.push(Need::Busybox);
    if testkit::require("container root, sysbox-like", &needs) {
        a_containers_root_is_an_overlay_of_the_image(BoxKind::SysboxLike);
    }
}

#[test]
fn a_privileged_like_containers_root_is_an_overlay_of_the_image_with_its_layer_on_disk() {
    let mut needs = BOX.to_vec();
    needs.push(Need::Busybox);
    if testkit::require("container root, privileged-like", &needs) {
        a_containers_root_is_an_overlay_of_the_image(BoxKind::PrivilegedLike);
    }
}

/// Writes everywhere a start can, leaves a mark in its network and IPC namespaces, and names its
/// namespaces.
const FIRST_START: &str = "\
    echo root > /etc/on-the-root && echo volume > /var/lib/docker/on-the-volume && \
    echo tmpfs > /tmp/on-the-tmpfs && echo shm > /dev/shm/on-the-shm && \
    ip addr add 10.99.99.99/32 dev lo && touch /dev/mqueue/on-the-ipc && \
    for n in net ipc uts user; do echo $n=$(readlink /proc/self/ns/$n); done";

/// What the next start finds.
const NEXT_START: &str = "\
    for f in /etc/on-the-root /var/lib/docker/on-the-volume /tmp/on-the-tmpfs /dev/shm/on-the-shm \
      /dev/mqueue/on-the-ipc; do \
      if [ -e $f ]; then echo $f=kept; else echo $f=gone; fi; done; \
    if ip addr show dev lo | grep -q 10.99.99.99; then echo net=kept; else echo net=gone; fi; \
    for n in net ipc uts user; do echo ns-$n=$(readlink /proc/self/ns/$n); done; \
    echo hostname=$(hostname)";

fn a_restart_keeps_what_its_mode_keeps(kind: BoxKind, mode: RestartMode) {
    let (dir, tree) = busybox_tree();
    let mut c = Container::builder(kind, &tree)
        .idle()
        .restart_mode(mode)
        .tmpfs_docker("/tmp")
        .unwrap()
        .create()
        .unwrap();
    c.start(&dir.path().join("start-1.log")).unwrap();
    let first = csh(&c, FIRST_START);
    let get = |out: &str, key: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} missing: {out}"))
            .to_owned()
    };
    // Held open across the restart, the first start's network namespace cannot be freed, so a
    // new one cannot get its inode number.
    let ns_file = |c: &Container| {
        let pid = c.current().unwrap().pid();
        std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap()
    };
    let held = ns_file(&c);
    let first_net = held.metadata().unwrap().ino();
    // `restart: always` after the entrypoint's exit; a pod's container after its own.
    assert_eq!(c.stop(Duration::from_secs(20)).unwrap().code(), Some(0));
    c.start(&dir.path().join("start-2.log")).unwrap();
    assert_eq!(
        ns_file(&c).metadata().unwrap().ino() == first_net,
        mode == RestartMode::Pod,
        "{kind:?} {mode:?}: the network namespace's inode"
    );
    drop(held);
    let next = csh(&c, NEXT_START);
    let what = format!("{kind:?} {mode:?}:\n{next}");
    let pod = mode == RestartMode::Pod;
    let keep = |kept: bool| if kept { "kept" } else { "gone" };
    for (key, kept) in [
        ("/etc/on-the-root", true),
        ("/var/lib/docker/on-the-volume", true),
        ("/tmp/on-the-tmpfs", false),
        ("/dev/shm/on-the-shm", pod),
        ("/dev/mqueue/on-the-ipc", pod),
        ("net", pod),
    ] {
        assert_eq!(get(&next, key), keep(kept), "{key}: {what}");
    }
    // A namespace that is kept is the same inode. (A new one may well get the inode number of
    // the one that went before it, which the kernel reuses: the marks above tell them apart.)
    if pod {
        let mut kept = vec!["net", "ipc", "uts"];
        if kind == BoxKind::SysboxLike {
            kept.push("user");
        }
        for n in kept {
            assert_eq!(
                get(&first, n),
                get(&next, &format!("ns-{n}")),
                "{n}: {what}"
            );
        }
    }
    assert_eq!(get(&next, "hostname"), c.hostname());
    assert_eq!(c.starts(), 2);
}

#[test]
fn a_docker_restart_keeps_the_root_and_the_volume_and_nothing_of_the_namespaces_or_tmpfs() {
    let mut needs = BOX.to_vec();
    needs.push(Need::Busybox);
    if !testkit::require("docker restart", &needs) {
        return;
    }
    for kind in [BoxKind::SysboxLike, BoxKind::PrivilegedLike] {
        a_restart_keeps_what_its_mode_keeps(kind, RestartMode::Docker);
    }
}

#[test]
fn a_pod_restart_keeps_the_root_the_volume_the_network_ipc_and_dev_shm_but_not_tmpfs() {
    let mut needs = BOX.to_vec();
    needs.push(Need::Busybox);
    if !testkit::require("pod restart", &needs) {
        return;
    }
    for kind in [BoxKind::SysboxLike, BoxKind::PrivilegedLike] {
        a_restart_keeps_what_its_mode_keeps(kind, RestartMode::Pod);
    }
}

fn dockers_files_and_resolver(mode: RestartMode) {
    let (dir, tree) = busybox_tree();
    let mut c = Container::builder(BoxKind::SysboxLike, &tree)
        .idle()
        .restart_mode(mode)
        .network(&["github.fake"])
        .create()
        .unwrap();
    let (ip, peer) = {
        let n = c.network().unwrap();
        (n.box_ip, n.peer_ip)
    };
    for start in 1..=2 {
        c.start(&dir.path().join(format!("start-{start}.log")))
            .unwrap();
        let what = format!("{mode:?}, start {start}");
        let h = c.hostname().to_owned();
        assert_eq!(h.len(), 12, "the id's first 12 hex digits: {h}");
        assert!(c.id().starts_with(&h));
        assert_eq!(csh(&c, "hostname"), h, "{what}");
        assert_eq!(csh(&c, "cat /etc/hostname"), h, "{what}");
        let edited = "10.9.9.9 edited-by-a-job\n";
        let mut hosts = boxes::files::hosts(&h, Some(ip));
        if start == 2 && mode == RestartMode::Pod {
            // A job's edit: the pod's sandbox keeps the file, Docker writes it anew.
            hosts.push_str(edited);
        }
        assert_eq!(csh(&c, "cat /etc/hosts") + "\n", hosts, "{what}");
        assert_eq!(
            csh(&c, "cat /etc/resolv.conf") + "\n",
            boxes::files::resolv_conf(),
            "{what}"
        );
        // Bind-mounted files, as Docker makes them.
        let mounts = csh(&c, "cat /proc/self/mountinfo");
        for f in ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"] {
            assert!(
                mounts
                    .lines()
                    .any(|l| l.split_whitespace().nth(4) == Some(f)),
                "{what}: {f} is not a mount\n{mounts}"
            );
        }
        // /etc/hosts resolves the hostname (NSS files; busybox's hostname -i asks the C library).
        assert_eq!(csh(&c, "hostname -i"), ip.to_string(), "{what}");
        // Names through the resolver at 127.0.0.11, and nothing else.
        let out = csh(&c, "nslookup github.fake");
        assert!(out.contains(&peer.to_string()), "{what}: {out}");
        assert!(out.contains("127.0.0.11"), "{what}: {out}");
        let out = csh(&c, &format!("nslookup {h}"));
        assert!(out.contains(&ip.to_string()), "{what}: {out}");
        let (ok, out) = csh_ok(&c, "nslookup github.com");
        assert!(!ok, "{what}: a name that is not the rig's resolved: {out}");
        // Only inside the container's own network namespace: from another one, made inside
        // the container, 127.0.0.11 is that namespace's own loopback, where nothing answers.
        let (ok, out) = csh_ok(
            &c,
            "unshare -n sh -c 'ip link set lo up && nslookup github.fake 127.0.0.11'",
        );
        assert!(
            !ok,
            "{what}: the resolver answered another namespace: {out}"
        );
        assert!(!out.contains(&peer.to_string()), "{what}: {out}");
        if start == 1 {
            csh(&c, &format!("printf '{edited}' >> /etc/hosts"));
        }
        assert_eq!(c.stop(Duration::from_secs(20)).unwrap().code(), Some(0));
    }
}

#[test]
fn a_containers_hosts_resolves_its_hostname_and_its_resolver_answers_only_inside_it() {
    let mut needs = BOX.to_vec();
    needs.push(Need::Busybox);
    if !testkit::require("docker's files and resolver", &needs) {
        return;
    }
    for mode in [RestartMode::Docker, RestartMode::Pod] {
        dockers_files_and_resolver(mode);
    }
}

#[test]
fn a_container_start_that_exits_says_its_exit_code_and_a_second_start_runs_it_again() {
    let mut needs = BOX.to_vec();
    needs.push(Need::Busybox);
    if !testkit::require("container exit code", &needs) {
        return;
    }
    let (dir, tree) = busybox_tree();
    // The entrypoint counts its starts in the container's layer and exits with the count.
    let mut c = Container::builder(BoxKind::SysboxLike, &tree)
        .entrypoint([
            "sh",
            "-c",
            "test $$ = 1 && echo x >> /var/starts && exit $(wc -l < /var/starts)",
        ])
        .env("ONLY", "this")
        .create()
        .unwrap();
    for n in 1..=2 {
        let log = dir.path().join(format!("start-{n}.log"));
        c.start(&log).unwrap();
        let status = c
            .wait(Duration::from_secs(60))
            .unwrap()
            .expect("PID 1 exits");
        assert_eq!(
            status.code(),
            Some(n),
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
    }
    // PID 1's environment is the container's, none of the test's.
    let mut c = Container::builder(BoxKind::SysboxLike, &tree)
        .entrypoint(["sh", "-c", "env | sort"])
        .env("ONLY", "this")
        .create()
        .unwrap();
    let log = dir.path().join("env.log");
    c.start(&log).unwrap();
    assert_eq!(
        c.wait(Duration::from_secs(60)).unwrap().unwrap().code(),
        Some(0)
    );
    let env = std::fs::read_to_string(&log).unwrap();
    let names: BTreeSet<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    // sh adds PWD and SHLVL of its own; Docker's PATH, as the image has none.
    let want: BTreeSet<&str> = ["HOME", "HOSTNAME", "ONLY", "PATH", "PWD", "SHLVL"].into();
    assert_eq!(names, want, "{env}");
    assert!(env.contains(&format!("HOSTNAME={}", c.hostname())), "{env}");
    assert!(
        env.contains(&format!("PATH={}\n", boxes::DEFAULT_PATH)),
        "{env}"
    );
}
