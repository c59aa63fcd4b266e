//! The box's mount table: a pure plan computed on the host (which host paths exist decides where
//! an overlay must provide a mount point), and the executor the box's PID 1 runs in its own mount
//! namespace. Nothing here is ever mounted in the host's namespace, and no host path is created.

use super::error::Error;
use super::tmpfs::TmpfsOptions;
use nix::mount::{MsFlags, mount};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

/// One mount-table change inside the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum MountStep {
    /// `mount --make-rprivate /`: nothing the box mounts propagates back to the host.
    MakeRprivate,
    /// A fresh procfs on `/proc` for the box's pid namespace.
    Proc,
    Tmpfs {
        target: PathBuf,
        options: TmpfsOptions,
    },
    /// `mkdir -p`, mode 0755, owned by the box's root.
    Mkdir {
        path: PathBuf,
    },
    /// An overlay whose lower layer is `target` itself, with its upper layer on the box's scratch
    /// tmpfs: a writable view of a host directory, in which missing mount points are created
    /// without creating them on the host.
    Overlay {
        target: PathBuf,
        upper: PathBuf,
        work: PathBuf,
        /// Overlay in a user namespace keeps its metadata in `user.*` xattrs (kernel >= 5.11).
        userxattr: bool,
    },
    Bind {
        source: PathBuf,
        target: PathBuf,
    },
    /// An empty file to bind a host file (a device node, say) onto.
    Touch {
        path: PathBuf,
    },
    /// A fresh sysfs (the box owns its net namespace, so its root may mount one).
    Sysfs {
        target: PathBuf,
    },
    /// A procfs for the box's pid namespace at `target` (inside an image's tree).
    ProcAt {
        target: PathBuf,
    },
    /// A new devpts instance, its own `ptmx`.
    Devpts {
        target: PathBuf,
    },
    Symlink {
        /// What the link points to.
        to: PathBuf,
        link: PathBuf,
    },
    /// `pivot_root` into `root` (already a mount point) and detach the old root: the box then
    /// sees only the image's tree and what was mounted into it.
    PivotRoot {
        root: PathBuf,
    },
}

/// What a private path of the box is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Private {
    Tmpfs(TmpfsOptions),
    /// A host directory the box owns.
    Bind {
        source: PathBuf,
    },
}

/// Everything the plan depends on besides which paths exist.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// A host directory owned by the box, empty: the box mounts its scratch tmpfs there.
    pub scratch: &'a Path,
    pub userxattr: bool,
    /// (path inside the box, what it becomes).
    pub private: &'a [(PathBuf, Private)],
    /// (host cgroup directory, hierarchy mount point) from the cgroup plan.
    pub cgroup_binds: &'a [(PathBuf, PathBuf)],
}

/// Paths the box must not cover or overlay: `/` itself, and the kernel filesystems, which are
/// set up by other rules.
fn reserved(p: &Path) -> bool {
    p == Path::new("/") || ["/proc", "/sys", "/dev"].iter().any(|r| p.starts_with(r))
}

/// The mount steps, in order. `exists` answers for host paths (the box starts with the host's
/// view, so the host can decide where mount points are missing).
pub fn plan(inp: &Inputs<'_>, exists: &dyn Fn(&Path) -> bool) -> Result<Vec<MountStep>, Error> {
    let mut targets: Vec<&(PathBuf, Private)> = inp.private.iter().collect();
    targets.sort_by(|a, b| a.0.cmp(&b.0));
    for w in targets.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(Error::Invalid(format!(
                "{} is given twice",
                w[0].0.display()
            )));
        }
    }
    for (t, what) in &targets {
        check_path(t, "a box path")?;
        if reserved(t) {
            return Err(Error::Invalid(format!(
                "{}: / , /proc, /sys and /dev cannot be private paths",
                t.display()
            )));
        }
        if let Private::Bind { source } = what {
            check_path(source, "a host directory")?;
        }
    }
    check_path(inp.scratch, "the scratch directory")?;

    let mut steps = vec![MountStep::MakeRprivate, MountStep::Proc];
    let mut mounted: Vec<&Path> = Vec::new();
    let mut overlaid: Vec<PathBuf> = Vec::new();
    for (target, what) in targets {
        if mounted.iter().any(|m| target.starts_with(m)) {
            // Inside an earlier private path: its mount point is the box's own to create.
            steps.push(MountStep::Mkdir {
                path: target.clone(),
            });
        } else if !exists(target) {
            let base = nearest_existing(target, exists);
            if reserved(&base) {
                return Err(Error::Invalid(format!(
                    "{}: its nearest existing parent is {}, which cannot be overlaid; choose a path whose parent exists",
                    target.display(),
                    base.display()
                )));
            }
            if !overlaid.contains(&base) {
                if overlaid.is_empty() {
                    steps.push(MountStep::Tmpfs {
                        target: inp.scratch.to_owned(),
                        options: TmpfsOptions::harness(0o700),
                    });
                }
                let layer = inp.scratch.join(overlaid.len().to_string());
                let (upper, work) = (layer.join("upper"), layer.join("work"));
                check_overlay_option(&base)?;
                steps.push(MountStep::Mkdir {
                    path: upper.clone(),
                });
                steps.push(MountStep::Mkdir { path: work.clone() });
                steps.push(MountStep::Overlay {
                    target: base.clone(),
                    upper,
                    work,
                    userxattr: inp.userxattr,
                });
                overlaid.push(base);
            }
            steps.push(MountStep::Mkdir {
                path: target.clone(),
            });
        }
        steps.push(match what {
            Private::Tmpfs(options) => MountStep::Tmpfs {
                target: target.clone(),
                options: options.clone(),
            },
            Private::Bind { source } => MountStep::Bind {
                source: source.clone(),
                target: target.clone(),
            },
        });
        mounted.push(target);
    }
    for (source, target) in inp.cgroup_binds {
        steps.push(MountStep::Bind {
            source: source.clone(),
            target: target.clone(),
        });
    }
    Ok(steps)
}

/// Everything an image's tree needs to become a box's root, the way sysbox sets up a container.
#[derive(Debug, Clone)]
pub struct RootfsInputs<'a> {
    /// The unpacked image (owners already shifted into the box's range).
    pub rootfs: &'a Path,
    /// (path inside the image, what it becomes): the compose file's tmpfs mounts, the data root.
    pub private: &'a [(PathBuf, Private)],
    /// Which private bind sources are files (bound onto a file, not a directory).
    pub file_sources: &'a [PathBuf],
    /// (host cgroup directory, hierarchy mount point) from the cgroup plan.
    pub cgroup_binds: &'a [(PathBuf, PathBuf)],
    /// (link below /sys/fs/cgroup, what it points to): `cpu -> cpu,cpuacct` as on the host.
    pub cgroup_links: &'a [(PathBuf, PathBuf)],
    /// Device nodes bound from the host's /dev (names below /dev).
    pub devices: &'a [&'a str],
}

/// The mount steps that make an image's tree the box's root: a fresh proc and sysfs, a tmpfs
/// cgroupfs with the box's delegated directories bound in, a tmpfs /dev with the usual nodes and a
/// devpts of its own, the private paths, then `pivot_root`.
pub fn rootfs_plan(inp: &RootfsInputs<'_>) -> Result<Vec<MountStep>, Error> {
    check_path(inp.rootfs, "the image's tree")?;
    let at = |p: &Path| inp.rootfs.join(p.strip_prefix("/").unwrap_or(p));
    let mut steps = vec![
        MountStep::MakeRprivate,
        MountStep::Bind {
            source: inp.rootfs.to_owned(),
            target: inp.rootfs.to_owned(),
        },
        MountStep::Mkdir {
            path: at(Path::new("/proc")),
        },
        MountStep::ProcAt {
            target: at(Path::new("/proc")),
        },
        MountStep::Mkdir {
            path: at(Path::new("/sys")),
        },
        MountStep::Sysfs {
            target: at(Path::new("/sys")),
        },
        MountStep::Tmpfs {
            target: at(Path::new("/sys/fs/cgroup")),
            options: TmpfsOptions::harness(0o755),
        },
    ];
    for (link, to) in inp.cgroup_links {
        steps.push(MountStep::Symlink {
            to: to.clone(),
            link: at(link),
        });
    }
    for (source, target) in inp.cgroup_binds {
        steps.push(MountStep::Mkdir { path: at(target) });
        steps.push(MountStep::Bind {
            source: source.clone(),
            target: at(target),
        });
    }
    let dev = at(Path::new("/dev"));
    steps.push(MountStep::Mkdir { path: dev.clone() });
    steps.push(MountStep::Tmpfs {
        target: dev.clone(),
        options: TmpfsOptions::harness(0o755),
    });
    for d in inp.devices {
        if d.contains('/') || d.starts_with('.') {
            return Err(Error::Invalid(format!("device {d}: a name below /dev")));
        }
        steps.push(MountStep::Touch { path: dev.join(d) });
        steps.push(MountStep::Bind {
            source: Path::new("/dev").join(d),
            target: dev.join(d),
        });
    }
    steps.extend([
        MountStep::Mkdir {
            path: dev.join("pts"),
        },
        MountStep::Devpts {
            target: dev.join("pts"),
        },
        MountStep::Symlink {
            to: "pts/ptmx".into(),
            link: dev.join("ptmx"),
        },
        MountStep::Mkdir {
            path: dev.join("shm"),
        },
        MountStep::Tmpfs {
            target: dev.join("shm"),
            options: TmpfsOptions::harness(0o1777),
        },
    ]);
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        steps.push(MountStep::Symlink {
            to: to.into(),
            link: dev.join(name),
        });
    }
    let mut private: Vec<&(PathBuf, Private)> = inp.private.iter().collect();
    private.sort_by(|a, b| a.0.cmp(&b.0));
    for (target, what) in private {
        check_path(target, "a path in the image")?;
        if reserved(target) {
            return Err(Error::Invalid(format!(
                "{}: / , /proc, /sys and /dev are set up by the box",
                target.display()
            )));
        }
        match what {
            Private::Tmpfs(options) => {
                steps.push(MountStep::Mkdir { path: at(target) });
                steps.push(MountStep::Tmpfs {
                    target: at(target),
                    options: options.clone(),
                });
            }
            Private::Bind { source } => {
                check_path(source, "a host path")?;
                steps.push(if inp.file_sources.contains(source) {
                    MountStep::Touch { path: at(target) }
                } else {
                    MountStep::Mkdir { path: at(target) }
                });
                steps.push(MountStep::Bind {
                    source: source.clone(),
                    target: at(target),
                });
            }
        }
    }
    steps.push(MountStep::PivotRoot {
        root: inp.rootfs.to_owned(),
    });
    Ok(steps)
}

fn nearest_existing(target: &Path, exists: &dyn Fn(&Path) -> bool) -> PathBuf {
    let mut p = target;
    while let Some(parent) = p.parent() {
        if exists(parent) {
            return parent.to_owned();
        }
        p = parent;
    }
    PathBuf::from("/")
}

fn check_path(p: &Path, what: &str) -> Result<(), Error> {
    let normal = p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if normal {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} {}: expected an absolute path without . or ..",
            p.display()
        )))
    }
}

/// overlayfs splits its options at `,` and its lower layers at `:`.
fn check_overlay_option(p: &Path) -> Result<(), Error> {
    let s = p.to_string_lossy();
    if s.contains([',', ':', '\\']) || s.chars().any(char::is_whitespace) {
        return Err(Error::Invalid(format!(
            "{s}: a mount point has to be created below it, and overlayfs options cannot name a path with , : \\ or spaces"
        )));
    }
    Ok(())
}

/// Runs in the box's PID 1, as the box's root, in the box's own mount namespace.
pub fn apply(steps: &[MountStep]) -> Result<(), String> {
    for step in steps {
        apply_one(step).map_err(|e| format!("{step:?}: {e}"))?;
    }
    Ok(())
}

fn apply_one(step: &MountStep) -> std::io::Result<()> {
    const NONE: Option<&str> = None;
    match step {
        MountStep::MakeRprivate => {
            mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)?
        }
        MountStep::Proc => mount(
            Some("proc"),
            "/proc",
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            NONE,
        )?,
        MountStep::Tmpfs { target, options } => {
            let f = options.flags;
            let flags = [
                (f.ro, MsFlags::MS_RDONLY),
                (f.nosuid, MsFlags::MS_NOSUID),
                (f.nodev, MsFlags::MS_NODEV),
                (f.noexec, MsFlags::MS_NOEXEC),
                (f.noatime, MsFlags::MS_NOATIME),
                (f.sync, MsFlags::MS_SYNCHRONOUS),
            ]
            .into_iter()
            .filter(|(on, _)| *on)
            .fold(MsFlags::empty(), |all, (_, flag)| all | flag);
            mount(
                Some("tmpfs"),
                target,
                Some("tmpfs"),
                flags,
                Some(options.data().as_str()),
            )?
        }
        MountStep::Mkdir { path } => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)?,
        MountStep::Overlay {
            target,
            upper,
            work,
            userxattr,
        } => {
            let mut opts = format!(
                "lowerdir={},upperdir={},workdir={}",
                target.display(),
                upper.display(),
                work.display()
            );
            if *userxattr {
                opts.push_str(",userxattr");
            }
            mount(
                Some("overlay"),
                target,
                Some("overlay"),
                MsFlags::empty(),
                Some(opts.as_str()),
            )?
        }
        MountStep::Bind { source, target } => mount(
            Some(source),
            target,
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            NONE,
        )?,
        MountStep::Touch { path } => {
            if let Some(parent) = path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
        }
        MountStep::Sysfs { target } => mount(
            Some("sysfs"),
            target,
            Some("sysfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            NONE,
        )?,
        MountStep::ProcAt { target } => mount(
            Some("proc"),
            target,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            NONE,
        )?,
        MountStep::Devpts { target } => mount(
            Some("devpts"),
            target,
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )?,
        MountStep::Symlink { to, link } => match std::os::unix::fs::symlink(to, link) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(link)?;
                std::os::unix::fs::symlink(to, link)?
            }
            r => r?,
        },
        MountStep::PivotRoot { root } => {
            // pivot_root(".", "."): the old root ends up on top of the new one, then goes.
            std::env::set_current_dir(root)?;
            nix::unistd::pivot_root(".", ".")?;
            nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)?;
            std::env::set_current_dir("/")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn private() -> Vec<(PathBuf, Private)> {
        vec![
            (
                p("/var/lib/docker"),
                Private::Bind {
                    source: p("/st/b/var-lib-docker"),
                },
            ),
            (
                p("/etc/docker"),
                Private::Tmpfs(TmpfsOptions::harness(0o755)),
            ),
            (p("/run"), Private::Tmpfs(TmpfsOptions::harness(0o755))),
            (
                p("/tmp"),
                Private::Bind {
                    source: p("/st/b/tmp"),
                },
            ),
            (
                p("/opt/actions-runner"),
                Private::Bind {
                    source: p("/st/b/runner"),
                },
            ),
            (
                p("/home/runner"),
                Private::Bind {
                    source: p("/st/b/home"),
                },
            ),
        ]
    }

    fn inputs<'a>(
        private: &'a [(PathBuf, Private)],
        binds: &'a [(PathBuf, PathBuf)],
    ) -> Inputs<'a> {
        Inputs {
            scratch: Path::new("/st/b/scratch"),
            userxattr: true,
            private,
            cgroup_binds: binds,
        }
    }

    #[test]
    fn missing_mount_points_are_made_in_one_overlay_per_existing_parent() {
        let host = [
            "/var",
            "/var/lib",
            "/etc",
            "/etc/docker",
            "/run",
            "/tmp",
            "/opt",
            "/home",
        ];
        let exists = |q: &Path| host.iter().any(|h| Path::new(h) == q);
        let binds = vec![(p("/sys/fs/cgroup/cpu/b"), p("/sys/fs/cgroup/cpu"))];
        let private = private();
        let steps = plan(&inputs(&private, &binds), &exists).unwrap();
        let ovl = |n: &str, t: &str| MountStep::Overlay {
            target: p(t),
            upper: p(&format!("/st/b/scratch/{n}/upper")),
            work: p(&format!("/st/b/scratch/{n}/work")),
            userxattr: true,
        };
        let mkdir = |s: &str| MountStep::Mkdir { path: p(s) };
        let bind = |s: &str, t: &str| MountStep::Bind {
            source: p(s),
            target: p(t),
        };
        let tmpfs = |t: &str, mode| MountStep::Tmpfs {
            target: p(t),
            options: TmpfsOptions::harness(mode),
        };
        assert_eq!(
            steps,
            vec![
                MountStep::MakeRprivate,
                MountStep::Proc,
                tmpfs("/etc/docker", 0o755),
                tmpfs("/st/b/scratch", 0o700),
                mkdir("/st/b/scratch/0/upper"),
                mkdir("/st/b/scratch/0/work"),
                ovl("0", "/home"),
                mkdir("/home/runner"),
                bind("/st/b/home", "/home/runner"),
                mkdir("/st/b/scratch/1/upper"),
                mkdir("/st/b/scratch/1/work"),
                ovl("1", "/opt"),
                mkdir("/opt/actions-runner"),
                bind("/st/b/runner", "/opt/actions-runner"),
                tmpfs("/run", 0o755),
                bind("/st/b/tmp", "/tmp"),
                mkdir("/st/b/scratch/2/upper"),
                mkdir("/st/b/scratch/2/work"),
                ovl("2", "/var/lib"),
                mkdir("/var/lib/docker"),
                bind("/st/b/var-lib-docker", "/var/lib/docker"),
                bind("/sys/fs/cgroup/cpu/b", "/sys/fs/cgroup/cpu"),
            ]
        );
    }

    #[test]
    fn a_path_inside_another_private_path_is_created_there_not_overlaid() {
        let private = vec![
            (
                p("/tmp"),
                Private::Bind {
                    source: p("/st/b/tmp"),
                },
            ),
            (
                p("/tmp/runner"),
                Private::Bind {
                    source: p("/st/b/runner"),
                },
            ),
        ];
        let steps = plan(&inputs(&private, &[]), &|q| q == Path::new("/tmp")).unwrap();
        assert_eq!(
            &steps[2..],
            &[
                MountStep::Bind {
                    source: p("/st/b/tmp"),
                    target: p("/tmp")
                },
                MountStep::Mkdir {
                    path: p("/tmp/runner")
                },
                MountStep::Bind {
                    source: p("/st/b/runner"),
                    target: p("/tmp/runner")
                },
            ]
        );
    }

    #[test]
    fn the_root_and_kernel_filesystems_are_refused() {
        for bad in [
            "/",
            "/proc/x",
            "/sys/fs/cgroup",
            "/dev/shm",
            "relative",
            "/a/../b",
        ] {
            let private = vec![(p(bad), Private::Tmpfs(TmpfsOptions::harness(0o755)))];
            assert!(
                plan(&inputs(&private, &[]), &|_| true).is_err(),
                "{bad} accepted"
            );
        }
        // A missing top-level directory would need an overlay on /.
        let private = vec![(
            p("/nowhere/x"),
            Private::Tmpfs(TmpfsOptions::harness(0o755)),
        )];
        let err = plan(&inputs(&private, &[]), &|q| q == Path::new("/")).unwrap_err();
        assert!(
            err.to_string().contains("nearest existing parent is /"),
            "{err}"
        );
    }

    #[test]
    fn an_image_tree_becomes_the_root_with_kernel_filesystems_devices_and_private_paths() {
        let private = vec![
            (p("/tmp"), Private::Tmpfs(TmpfsOptions::harness(0o1777))),
            (
                p("/var/lib/docker"),
                Private::Bind {
                    source: p("/st/b/var-lib-docker"),
                },
            ),
            (p("/run"), Private::Tmpfs(TmpfsOptions::harness(0o755))),
            (
                p("/etc/hosts"),
                Private::Bind {
                    source: p("/st/hosts"),
                },
            ),
        ];
        let binds = vec![(
            p("/sys/fs/cgroup/cpu,cpuacct/b"),
            p("/sys/fs/cgroup/cpu,cpuacct"),
        )];
        let links = vec![(p("/sys/fs/cgroup/cpu"), p("cpu,cpuacct"))];
        let steps = rootfs_plan(&RootfsInputs {
            rootfs: Path::new("/img"),
            private: &private,
            file_sources: &[p("/st/hosts")],
            cgroup_binds: &binds,
            cgroup_links: &links,
            devices: &["null", "tty"],
        })
        .unwrap();
        let pos = |want: &MountStep| {
            steps
                .iter()
                .position(|s| s == want)
                .unwrap_or_else(|| panic!("{want:?} missing from {steps:#?}"))
        };
        let bind = |s: &str, t: &str| MountStep::Bind {
            source: p(s),
            target: p(t),
        };
        assert_eq!(steps[0], MountStep::MakeRprivate);
        assert_eq!(steps[1], bind("/img", "/img"));
        let sysfs = pos(&MountStep::Sysfs {
            target: p("/img/sys"),
        });
        let cg_tmpfs = pos(&MountStep::Tmpfs {
            target: p("/img/sys/fs/cgroup"),
            options: TmpfsOptions::harness(0o755),
        });
        let cg_bind = pos(&bind(
            "/sys/fs/cgroup/cpu,cpuacct/b",
            "/img/sys/fs/cgroup/cpu,cpuacct",
        ));
        let link = pos(&MountStep::Symlink {
            to: p("cpu,cpuacct"),
            link: p("/img/sys/fs/cgroup/cpu"),
        });
        assert!(sysfs < cg_tmpfs && cg_tmpfs < cg_bind && cg_tmpfs < link);
        let dev = pos(&MountStep::Tmpfs {
            target: p("/img/dev"),
            options: TmpfsOptions::harness(0o755),
        });
        let null = pos(&bind("/dev/null", "/img/dev/null"));
        assert!(dev < null);
        pos(&MountStep::Devpts {
            target: p("/img/dev/pts"),
        });
        // Private paths in path order; a file source is bound onto a file.
        let hosts = pos(&MountStep::Touch {
            path: p("/img/etc/hosts"),
        });
        let tmp = pos(&MountStep::Tmpfs {
            target: p("/img/tmp"),
            options: TmpfsOptions::harness(0o1777),
        });
        let data = pos(&bind("/st/b/var-lib-docker", "/img/var/lib/docker"));
        assert!(hosts < tmp && tmp < data);
        assert_eq!(
            steps.last(),
            Some(&MountStep::PivotRoot { root: p("/img") })
        );
        // The box owns / , /proc, /sys and /dev.
        let private = vec![(p("/dev/x"), Private::Tmpfs(TmpfsOptions::harness(0o755)))];
        let err = rootfs_plan(&RootfsInputs {
            rootfs: Path::new("/img"),
            private: &private,
            file_sources: &[],
            cgroup_binds: &[],
            cgroup_links: &[],
            devices: &[],
        })
        .unwrap_err();
        assert!(err.to_string().contains("set up by the box"), "{err}");
    }

    #[test]
    fn a_docker_tmpfs_carries_its_flags_and_data_to_the_step() {
        let (path, options) =
            crate::testkit::boxes::tmpfs::parse_docker("/tmp:exec,size=64m").unwrap();
        let private = vec![(path, Private::Tmpfs(options.clone()))];
        let steps = plan(&inputs(&private, &[]), &|q| q == Path::new("/tmp")).unwrap();
        assert_eq!(
            steps[2],
            MountStep::Tmpfs {
                target: p("/tmp"),
                options
            }
        );
        // The step crosses to box-init as JSON.
        let json = serde_json::to_string(&steps).unwrap();
        let back: Vec<MountStep> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, steps);
    }

    #[test]
    fn overlay_bases_with_option_separators_are_refused() {
        let private = vec![(p("/a,b/x"), Private::Tmpfs(TmpfsOptions::harness(0o755)))];
        let err = plan(&inputs(&private, &[]), &|q| q == Path::new("/a,b")).unwrap_err();
        assert!(err.to_string().contains("overlayfs options"), "{err}");
    }
}
