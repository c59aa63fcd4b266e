//! The life's mount plan, read as the rules in the module doc say it must be.

use super::*;
use std::net::Ipv4Addr;

fn layout() -> Layout {
    Layout::new(Path::new("/var/lib/docker"))
}

fn devices() -> Vec<String> {
    ["null", "zero", "full", "random", "urandom", "tty", "fuse"]
        .map(String::from)
        .to_vec()
}

fn input<'a>(l: &'a Layout, devices: &'a [String], binds: &'a [PathBuf]) -> Input<'a> {
    Input {
        kind: Kind::Namespaced,
        layout: l,
        volume_fstype: Some("ext4"),
        root_fstype: Some("overlay"),
        tmp: Tmp::Tmpfs {
            options: ["rw", "nosuid", "nodev", "size=2097152k", "mode=1777"]
                .map(String::from)
                .to_vec(),
        },
        devices,
        binds,
        hostname: HOSTNAME,
        address: Ipv4Addr::new(169, 254, 240, 2),
        resolv_conf: "nameserver 169.254.240.1\noptions ndots:0\n",
        sudoers: Some("runner ALL=(ALL) NOPASSWD:ALL\n"),
        cgroup_mounts: vec![Step::Cgroup2 {
            target: "/sys/fs/cgroup".into(),
        }],
        runner_dir: Path::new("/opt/actions-runner"),
        runner_uid: 1001,
        runner_gid: 1001,
    }
}

fn targets(p: &Plan) -> Vec<PathBuf> {
    p.steps
        .iter()
        .filter_map(|s| match s {
            Step::Overlay { target, .. }
            | Step::Proc { target }
            | Step::Sysfs { target }
            | Step::Tmpfs { target, .. }
            | Step::Devpts { target }
            | Step::Mqueue { target }
            | Step::Securityfs { target }
            | Step::Cgroup2 { target }
            | Step::CgroupV1 { target, .. }
            | Step::Bind { target, .. } => Some(target.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_root_is_an_overlay_of_the_containers_root_made_first_and_pivoted_into_last() {
    let (l, d) = (layout(), devices());
    let p = plan(&input(&l, &d, &[])).unwrap();
    assert_eq!(p.steps[0], Step::MakeRprivate);
    assert_eq!(
        p.steps[1],
        Step::Overlay {
            target: "/var/lib/docker/life/root".into(),
            upper: "/var/lib/docker/life/upper".into(),
            work: "/var/lib/docker/life/work".into(),
        }
    );
    let pivot = p
        .steps
        .iter()
        .position(|s| matches!(s, Step::PivotRoot { .. }))
        .unwrap();
    // Every mount before the pivot lands inside the new root: nothing is mounted in the
    // container's own tree.
    for t in targets(&p).iter().skip(1) {
        assert!(
            t.starts_with(l.root()),
            "{} outside the life's root",
            t.display()
        );
    }
    assert!(
        p.steps[pivot..].iter().all(|s| matches!(
            s,
            Step::PivotRoot { .. } | Step::MakeRshared | Step::ChownDirs { .. }
        )),
        "{:?}",
        &p.steps[pivot..]
    );
}

#[test]
fn the_life_gets_exactly_the_allow_list() {
    let (l, d) = (layout(), devices());
    let binds = [PathBuf::from("/cache")];
    let p = plan(&input(&l, &d, &binds)).unwrap();
    let r = |s: &str| l.root().join(s);
    let mut want: Vec<PathBuf> = vec![l.root(), r("proc"), r("sys"), r("sys/fs/cgroup"), r("dev")];
    want.extend(d.iter().map(|d| r("dev").join(d)));
    want.extend([
        r("dev/pts"),
        r("dev/shm"),
        r("dev/mqueue"),
        r("run"),
        r("tmp"),
        r("var/lib/docker"),
    ]);
    want.extend(
        SPECIAL_DIRS
            .iter()
            .map(|(path, _)| r(path.trim_start_matches('/'))),
    );
    want.push(r("cache"));
    assert_eq!(targets(&p), want);
    // Binds come only from the container's devices, the volume's life directories and the
    // operator's list: never sysrunner's state, never the life's own upper layer.
    for s in &p.steps {
        if let Step::Bind { source, .. } = s {
            assert!(
                source.starts_with("/dev")
                    || source.starts_with(&l.data)
                    || source.starts_with(&l.dirs)
                    || binds.contains(source),
                "unexpected bind source {}",
                source.display()
            );
            assert!(!source.starts_with(&l.state) && !source.starts_with(&l.life));
        }
    }
}

#[test]
fn the_containers_tmp_options_are_the_lifes() {
    let (l, d) = (layout(), devices());
    let p = plan(&input(&l, &d, &[])).unwrap();
    let tmp = p
        .steps
        .iter()
        .find(|s| matches!(s, Step::Tmpfs { target, .. } if target.ends_with("tmp")))
        .unwrap();
    assert_eq!(
        *tmp,
        Step::Tmpfs {
            target: l.root().join("tmp"),
            data: "size=2097152k,mode=1777".into(),
            nosuid: true,
            nodev: true,
            noexec: false,
        }
    );
    let mut i = input(&l, &d, &[]);
    i.tmp = Tmp::Disk;
    let p = plan(&i).unwrap();
    assert!(p.steps.contains(&Step::Bind {
        source: l.dirs.join("tmp"),
        target: l.root().join("tmp"),
        file: false,
    }));
    assert!(p.life_dirs.contains(&l.dirs.join("tmp")));
}

#[test]
fn privileged_gets_securityfs_and_the_namespaced_runtimes_do_not() {
    let (l, d) = (layout(), devices());
    let securityfs = |p: &Plan| p.steps.iter().any(|s| matches!(s, Step::Securityfs { .. }));
    assert!(!securityfs(&plan(&input(&l, &d, &[])).unwrap()));
    let mut i = input(&l, &d, &[]);
    i.kind = Kind::Privileged;
    assert!(securityfs(&plan(&i).unwrap()));
}

#[test]
fn what_the_lower_layer_holds_for_sysbox_never_shows_and_docker_files_are_the_lifes() {
    let (l, d) = (layout(), devices());
    let p = plan(&input(&l, &d, &[])).unwrap();
    // sysbox copies its host-backed directories into the container's layer at every stop: the
    // life's lower layer. Opaque, a job that unmounts the bind finds them empty.
    for path in [
        "/var/lib/docker",
        OLD_STATE,
        "/var/lib/buildkit",
        "/var/lib/kubelet",
    ] {
        assert!(p.opaque.contains(&PathBuf::from(path)), "{path}");
    }
    let file = |path: &str| p.files.iter().find(|f| f.path == Path::new(path)).unwrap();
    assert_eq!(file("/etc/hostname").contents, "runner\n");
    assert!(
        file("/etc/hosts")
            .contents
            .contains("169.254.240.2\trunner\n")
    );
    assert!(
        file("/etc/resolv.conf")
            .contents
            .starts_with("nameserver 169.254.240.1")
    );
    assert_eq!(file("/etc/sudoers.d/sysrunner").mode, 0o440);
    let mut i = input(&l, &d, &[]);
    i.sudoers = None;
    let without = plan(&i).unwrap();
    let rules: Vec<&File> = without
        .files
        .iter()
        .filter(|f| f.path.starts_with("/etc/sudoers.d"))
        .collect();
    // An empty rule file covers one the container's layer may hold from an unsandboxed life.
    assert_eq!(rules.len(), 1);
    assert!(
        rules[0].contents.lines().all(|l| l.starts_with('#')),
        "{:?}",
        rules[0].contents
    );
}

#[test]
fn no_volume_that_can_hold_an_upper_layer_or_a_root_two_layers_deep_is_unavailable() {
    let (l, d) = (layout(), devices());
    let mut i = input(&l, &d, &[]);
    i.volume_fstype = Some("overlay");
    assert!(matches!(plan(&i), Err(Unavailable::VolumeOnOverlay { .. })));
    let mut i = input(&l, &d, &[]);
    i.root_fstype = Some("shiftfs");
    assert!(matches!(plan(&i), Err(Unavailable::RootTooDeep(_))));
}
