//! The box's mount table: a pure plan computed on the host (which host paths exist decides where
//! an overlay must provide a mount point), and the executor the box's PID 1 runs in its own mount
//! namespace. Nothing here is ever mounted in the host's namespace, and no host path is created.
//!
//! Every plan is checked before it leaves here ([`check_order`]): no step mounts on or above what
//! an earlier step mounted (which would hide it), no bind takes its source from one of the box's
//! own mounts instead of the host, and nothing is created outside a mount the plan made.

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
    /// A container's root: an overlay of the image's tree (`lower`, never written) with the
    /// container's own writable layer (`upper` and `work`, host disk directories) on `target`.
    RootOverlay {
        lower: PathBuf,
        upper: PathBuf,
        work: PathBuf,
        target: PathBuf,
        /// As for [`MountStep::Overlay`].
        userxattr: bool,
    },
    /// A POSIX message queue filesystem for the box's IPC namespace (Docker's `/dev/mqueue`).
    Mqueue {
        target: PathBuf,
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
/// view, so the host can decide where mount points are missing). Each private path is what the
/// box gets there whether the host has that path or not, empty or not.
pub fn plan(inp: &Inputs<'_>, exists: &dyn Fn(&Path) -> bool) -> Result<Vec<MountStep>, Error> {
    let targets = sorted_private(
        inp.private,
        "a box path",
        "/ , /proc, /sys and /dev cannot be private paths",
    )?;
    check_path(inp.scratch, "the scratch directory")?;

    // Where each mount point comes from: below another private path it is made in that one
    // (which sorts, and so is mounted, first); missing on the host, it is made in an overlay of
    // its nearest existing parent.
    let mut made = Vec::with_capacity(targets.len());
    let mut bases: Vec<PathBuf> = Vec::new();
    for (target, _) in &targets {
        let in_private = targets
            .iter()
            .any(|(other, _)| other != target && target.starts_with(other));
        if in_private {
            made.push(true);
        } else if !exists(target) {
            let base = nearest_existing(target, exists);
            if reserved(&base) {
                return Err(Error::Invalid(format!(
                    "{}: its nearest existing parent is {}, which cannot be overlaid; choose a path whose parent exists",
                    target.display(),
                    base.display()
                )));
            }
            check_overlay_option(&base)?;
            if !bases.contains(&base) {
                bases.push(base);
            }
            made.push(true);
        } else {
            made.push(false);
        }
    }
    // Parents first: an overlay below another one stacks on it instead of being hidden by it.
    bases.sort();

    let mut steps = vec![MountStep::MakeRprivate, MountStep::Proc];
    // Every overlay before any private mount. An overlay's lower layer is its base directory
    // alone, without the mounts below it: overlaid after a private path below its base (the
    // host's /var/lib/docker bound, then /var/lib overlaid for a missing /var/lib/sysrunner), it
    // would hide that path behind the host's directory, and dockerd's data root would be on
    // overlayfs.
    if !bases.is_empty() {
        steps.push(MountStep::Tmpfs {
            target: inp.scratch.to_owned(),
            options: TmpfsOptions::harness(0o700),
        });
    }
    for (i, base) in bases.iter().enumerate() {
        let layer = inp.scratch.join(i.to_string());
        let (upper, work) = (layer.join("upper"), layer.join("work"));
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
    }
    for ((target, what), made) in targets.into_iter().zip(made) {
        if made {
            steps.push(MountStep::Mkdir {
                path: target.clone(),
            });
        }
        steps.push(private_mount(target.clone(), what));
    }
    for (source, target) in inp.cgroup_binds {
        steps.push(MountStep::Bind {
            source: source.clone(),
            target: target.clone(),
        });
    }
    check_order(&steps)?;
    Ok(steps)
}

/// The private paths in path order (a path before those below it), each checked: absolute and
/// normal, not reserved (`reserved_why` says why), given once, a bind's source normal too.
fn sorted_private<'a>(
    private: &'a [(PathBuf, Private)],
    what: &str,
    reserved_why: &str,
) -> Result<Vec<&'a (PathBuf, Private)>, Error> {
    let mut targets: Vec<&(PathBuf, Private)> = private.iter().collect();
    targets.sort_by(|a, b| a.0.cmp(&b.0));
    for w in targets.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(Error::Invalid(format!(
                "{} is given twice",
                w[0].0.display()
            )));
        }
    }
    for (t, how) in &targets {
        check_path(t, what)?;
        if reserved(t) {
            return Err(Error::Invalid(format!("{}: {reserved_why}", t.display())));
        }
        if let Private::Bind { source } = how {
            check_path(source, "a host path")?;
        }
    }
    Ok(targets)
}

fn private_mount(target: PathBuf, what: &Private) -> MountStep {
    match what {
        Private::Tmpfs(options) => MountStep::Tmpfs {
            target,
            options: options.clone(),
        },
        Private::Bind { source } => MountStep::Bind {
            source: source.clone(),
            target,
        },
    }
}

/// Checks the invariants every plan keeps, in the order the steps run: a mount never lands on or
/// above an earlier one (it would hide it: the box would not get that private path), a bind's
/// source is never below one of the box's own mounts (it would bind the box's copy, not the
/// host's directory), an overlay's layers are on a tmpfs the box mounted (overlayfs refuses an
/// upper layer on overlayfs), and nothing is created outside a mount the plan made (the host
/// gains no path).
pub fn check_order(steps: &[MountStep]) -> Result<(), Error> {
    // (mount point, is a tmpfs), in the order mounted.
    let mut mounted: Vec<(&Path, bool)> = Vec::new();
    let holder = |mounted: &[(&Path, bool)], p: &Path| -> Option<(PathBuf, bool)> {
        mounted
            .iter()
            .filter(|(m, _)| p.starts_with(m))
            .max_by_key(|(m, _)| m.components().count())
            .map(|(m, t)| (m.to_path_buf(), *t))
    };
    for step in steps {
        let fail = |why: String| Err(Error::Invalid(format!("mount plan: {step:?}: {why}")));
        let (target, tmpfs): (&Path, bool) = match step {
            MountStep::MakeRprivate | MountStep::PivotRoot { .. } => continue,
            MountStep::Mkdir { path }
            | MountStep::Touch { path }
            | MountStep::Symlink { link: path, .. } => {
                if holder(&mounted, path).is_none() {
                    return fail(format!(
                        "{} would be made on the host, outside every mount of the box",
                        path.display()
                    ));
                }
                continue;
            }
            MountStep::Bind { source, target } => {
                if let Some((m, _)) = holder(&mounted, source) {
                    return fail(format!(
                        "the source is below {}, which the box has already mounted: the bind would take the box's copy, not the host's",
                        m.display()
                    ));
                }
                (target, false)
            }
            MountStep::Overlay {
                target,
                upper,
                work,
                ..
            } => {
                for layer in [upper, work] {
                    if !matches!(holder(&mounted, layer), Some((_, true))) {
                        return fail(format!(
                            "{} is not on a tmpfs the box mounted",
                            layer.display()
                        ));
                    }
                }
                (target, false)
            }
            MountStep::RootOverlay {
                upper,
                work,
                target,
                ..
            } => {
                for layer in [upper, work] {
                    if let Some((m, _)) = holder(&mounted, layer) {
                        return fail(format!(
                            "{} is below {}, which the box mounted: the container's layer lives on the host's disk",
                            layer.display(),
                            m.display()
                        ));
                    }
                }
                (target, false)
            }
            MountStep::Tmpfs { target, .. } => (target, true),
            MountStep::Proc => (Path::new("/proc"), false),
            MountStep::Sysfs { target }
            | MountStep::ProcAt { target }
            | MountStep::Devpts { target }
            | MountStep::Mqueue { target } => (target, false),
        };
        if let Some((m, _)) = mounted.iter().find(|(m, _)| m.starts_with(target)) {
            return fail(format!(
                "it would cover {}, which an earlier step mounted",
                m.display()
            ));
        }
        mounted.push((target, tmpfs));
    }
    Ok(())
}

/// Where a container's root comes from: the image's tree as the overlay's lower layer, the
/// container's writable layer (host disk directories that outlive a start), and the empty
/// directory the overlay is mounted on before it becomes `/`.
#[derive(Debug, Clone)]
pub struct RootLayer<'a> {
    /// The unpacked image (owners already shifted into the box's range).
    pub lower: &'a Path,
    pub upper: &'a Path,
    pub work: &'a Path,
    pub merged: &'a Path,
    /// A user-namespace mount keeps overlay's metadata in `user.*` xattrs (sysbox-like boxes).
    pub userxattr: bool,
}

/// What `/dev/shm` is: a fresh tmpfs (a Docker container's, new at every start), or a bind of
/// the pod sandbox's, which outlives the container's starts as containerd's does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shm {
    Fresh(TmpfsOptions),
    Sandbox(PathBuf),
}

/// Everything an image's tree needs to become a box's root, the way Docker and sysbox set up a
/// container.
#[derive(Debug, Clone)]
pub struct RootfsInputs<'a> {
    pub root: RootLayer<'a>,
    /// (path inside the image, what it becomes): the compose file's tmpfs mounts, the data root,
    /// Docker's files.
    pub private: &'a [(PathBuf, Private)],
    /// Which private bind sources are files (bound onto a file, not a directory).
    pub file_sources: &'a [PathBuf],
    /// (host cgroup directory, hierarchy mount point) from the cgroup plan.
    pub cgroup_binds: &'a [(PathBuf, PathBuf)],
    /// (link below /sys/fs/cgroup, what it points to): `cpu -> cpu,cpuacct` as on the host.
    pub cgroup_links: &'a [(PathBuf, PathBuf)],
    /// Device nodes bound from the host's /dev (names below /dev).
    pub devices: &'a [&'a str],
    pub shm: Shm,
}

/// The mount steps that make an image's tree the box's root: the overlay root, a fresh proc and
/// sysfs, a tmpfs cgroupfs with the box's delegated directories bound in, a tmpfs /dev with the
/// usual nodes, a devpts of its own, `/dev/shm` and `/dev/mqueue`, the private paths, then
/// `pivot_root`. Every mount point the image lacks is made in the container's writable layer, as
/// runc makes them.
pub fn rootfs_plan(inp: &RootfsInputs<'_>) -> Result<Vec<MountStep>, Error> {
    let r = &inp.root;
    for (p, what) in [
        (r.lower, "the image's tree"),
        (r.upper, "the container's upper layer"),
        (r.work, "the container's work directory"),
        (r.merged, "the container's root mount point"),
    ] {
        check_path(p, what)?;
        check_overlay_option(p)?;
    }
    let root = r.merged;
    let at = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let mut steps = vec![
        MountStep::MakeRprivate,
        MountStep::RootOverlay {
            lower: r.lower.to_owned(),
            upper: r.upper.to_owned(),
            work: r.work.to_owned(),
            target: root.to_owned(),
            userxattr: r.userxattr,
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
        match &inp.shm {
            Shm::Fresh(options) => MountStep::Tmpfs {
                target: dev.join("shm"),
                options: options.clone(),
            },
            Shm::Sandbox(source) => MountStep::Bind {
                source: source.clone(),
                target: dev.join("shm"),
            },
        },
        MountStep::Mkdir {
            path: dev.join("mqueue"),
        },
        MountStep::Mqueue {
            target: dev.join("mqueue"),
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
    // Given twice, the later mount would hide the earlier one (a compose tmpfs on the data root,
    // say): refused like the host-view plan refuses it.
    let private = sorted_private(
        inp.private,
        "a path in the image",
        "/ , /proc, /sys and /dev are set up by the box",
    )?;
    for (target, what) in private {
        steps.push(match what {
            Private::Bind { source } if inp.file_sources.contains(source) => {
                MountStep::Touch { path: at(target) }
            }
            _ => MountStep::Mkdir { path: at(target) },
        });
        steps.push(private_mount(at(target), what));
    }
    steps.push(MountStep::PivotRoot {
        root: root.to_owned(),
    });
    check_order(&steps)?;
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
            // An existing file is left as it is: opened for writing, a file of an overlay's
            // lower layer would be copied up for nothing.
            if std::fs::symlink_metadata(path).is_err() {
                if let Some(parent) = path.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o755)
                        .create(parent)?;
                }
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path)
                {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
            }
        }
        MountStep::RootOverlay {
            lower,
            upper,
            work,
            target,
            userxattr,
        } => {
            let mut opts = format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                upper.display(),
                work.display()
            );
            if *userxattr {
                opts.push_str(",userxattr");
            }
            // The last start's overlay on the same upper layer goes with that start's mount
            // namespace; until the kernel has let go of it, the layer is "in use" (EBUSY).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                match mount(
                    Some("overlay"),
                    target,
                    Some("overlay"),
                    MsFlags::empty(),
                    Some(opts.as_str()),
                ) {
                    Err(nix::errno::Errno::EBUSY) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(50))
                    }
                    r => break r?,
                }
            }
        }
        MountStep::Mqueue { target } => mount(
            Some("mqueue"),
            target,
            Some("mqueue"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            NONE,
        )?,
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

    fn harness(mode: u32) -> Private {
        Private::Tmpfs(TmpfsOptions::harness(mode))
    }

    fn host_bind(source: &str) -> Private {
        Private::Bind { source: p(source) }
    }

    fn tmpfs_step(t: &str, mode: u32) -> MountStep {
        MountStep::Tmpfs {
            target: p(t),
            options: TmpfsOptions::harness(mode),
        }
    }

    fn mkdir(s: &str) -> MountStep {
        MountStep::Mkdir { path: p(s) }
    }

    fn bind(s: &str, t: &str) -> MountStep {
        MountStep::Bind {
            source: p(s),
            target: p(t),
        }
    }

    fn ovl(n: usize, t: &str) -> MountStep {
        MountStep::Overlay {
            target: p(t),
            upper: p(&format!("/st/b/scratch/{n}/upper")),
            work: p(&format!("/st/b/scratch/{n}/work")),
            userxattr: true,
        }
    }

    fn private() -> Vec<(PathBuf, Private)> {
        vec![
            (p("/var/lib/docker"), host_bind("/st/b/var-lib-docker")),
            (p("/etc/docker"), harness(0o755)),
            (p("/run"), harness(0o755)),
            (p("/tmp"), host_bind("/st/b/tmp")),
            (p("/opt/actions-runner"), host_bind("/st/b/runner")),
            (p("/home/runner"), host_bind("/st/b/home")),
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

    fn host(paths: &'static [&'static str]) -> impl Fn(&Path) -> bool {
        move |q: &Path| q == Path::new("/") || paths.iter().any(|h| Path::new(h) == q)
    }

    /// The mount the box sees at `path` once every step ran: the last one on `path` or above it
    /// (a later mount there hides the earlier ones).
    fn seen_at<'a>(steps: &'a [MountStep], path: &str) -> Option<&'a MountStep> {
        let path = Path::new(path);
        let mut seen = None;
        for s in steps {
            let target = match s {
                MountStep::Bind { target, .. }
                | MountStep::Tmpfs { target, .. }
                | MountStep::Overlay { target, .. } => target,
                _ => continue,
            };
            if path.starts_with(target) {
                seen = Some(s);
            }
        }
        seen
    }

    #[test]
    fn missing_mount_points_are_made_in_overlays_mounted_before_any_private_path() {
        let exists = host(&[
            "/var",
            "/var/lib",
            "/etc",
            "/etc/docker",
            "/run",
            "/tmp",
            "/opt",
            "/home",
        ]);
        let binds = vec![(p("/sys/fs/cgroup/cpu/b"), p("/sys/fs/cgroup/cpu"))];
        let private = private();
        let steps = plan(&inputs(&private, &binds), &exists).unwrap();
        assert_eq!(
            steps,
            vec![
                MountStep::MakeRprivate,
                MountStep::Proc,
                tmpfs_step("/st/b/scratch", 0o700),
                mkdir("/st/b/scratch/0/upper"),
                mkdir("/st/b/scratch/0/work"),
                ovl(0, "/home"),
                mkdir("/st/b/scratch/1/upper"),
                mkdir("/st/b/scratch/1/work"),
                ovl(1, "/opt"),
                mkdir("/st/b/scratch/2/upper"),
                mkdir("/st/b/scratch/2/work"),
                ovl(2, "/var/lib"),
                tmpfs_step("/etc/docker", 0o755),
                mkdir("/home/runner"),
                bind("/st/b/home", "/home/runner"),
                mkdir("/opt/actions-runner"),
                bind("/st/b/runner", "/opt/actions-runner"),
                tmpfs_step("/run", 0o755),
                bind("/st/b/tmp", "/tmp"),
                mkdir("/var/lib/docker"),
                bind("/st/b/var-lib-docker", "/var/lib/docker"),
                bind("/sys/fs/cgroup/cpu/b", "/sys/fs/cgroup/cpu"),
            ]
        );
    }

    #[test]
    fn the_data_root_is_the_boxs_whether_the_host_has_var_lib_docker_or_not() {
        let mut private = private();
        private.push((p("/var/lib/sysrunner"), harness(0o755)));
        let common = ["/var", "/var/lib", "/etc", "/run", "/tmp", "/opt", "/home"];
        let cases: [(&str, &'static [&'static str]); 4] = [
            ("both missing", &[]),
            ("both there", &["/var/lib/docker", "/var/lib/sysrunner"]),
            // The regression: /var/lib overlaid for the missing sibling after the host's
            // /var/lib/docker was bound, hiding the bind (dockerd then found overlayfs there).
            ("data root there, sibling missing", &["/var/lib/docker"]),
            ("data root missing, sibling there", &["/var/lib/sysrunner"]),
        ];
        for (case, extra) in cases {
            let exists = |q: &Path| {
                q == Path::new("/") || common.iter().chain(extra).any(|h| Path::new(h) == q)
            };
            let steps = plan(&inputs(&private, &[]), &exists).unwrap();
            for (target, what) in &private {
                let want = private_mount(target.clone(), what);
                assert_eq!(
                    seen_at(&steps, &target.to_string_lossy()),
                    Some(&want),
                    "{case}: {} in {steps:#?}",
                    target.display()
                );
            }
            let data = steps
                .iter()
                .position(|s| *s == bind("/st/b/var-lib-docker", "/var/lib/docker"))
                .unwrap();
            assert!(
                steps[data..]
                    .iter()
                    .all(|s| !matches!(s, MountStep::Overlay { .. })),
                "{case}: no overlay after the data root: {steps:#?}"
            );
        }
    }

    #[test]
    fn overlays_below_other_overlays_are_mounted_after_them() {
        // /var/lib/a is missing (overlay /var/lib), /var/lib/c exists but not its child
        // (overlay /var/lib/c, which must stack on /var/lib's, not be hidden by it).
        let private = vec![
            (p("/var/lib/c/y"), harness(0o755)),
            (p("/var/lib/a/x"), harness(0o755)),
        ];
        let steps = plan(
            &inputs(&private, &[]),
            &host(&["/var", "/var/lib", "/var/lib/c"]),
        )
        .unwrap();
        let at = |t: &str| {
            steps
                .iter()
                .position(
                    |s| matches!(s, MountStep::Overlay { target, .. } if target == Path::new(t)),
                )
                .unwrap()
        };
        assert!(at("/var/lib") < at("/var/lib/c"), "{steps:#?}");
        assert_eq!(
            seen_at(&steps, "/var/lib/c/y"),
            Some(&tmpfs_step("/var/lib/c/y", 0o755))
        );
        assert_eq!(
            seen_at(&steps, "/var/lib/a/x"),
            Some(&tmpfs_step("/var/lib/a/x", 0o755))
        );
    }

    #[test]
    fn a_docker_tmpfs_carries_its_flags_and_data_to_the_step() {
        let (path, options) = crate::boxes::tmpfs::parse_docker("/tmp:exec,size=64m").unwrap();
        let private = vec![(path, Private::Tmpfs(options.clone()))];
        let steps = plan(&inputs(&private, &[]), &host(&["/tmp"])).unwrap();
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
    fn an_overlay_that_would_hide_the_boxs_scratch_or_state_is_refused() {
        // /var/x is missing, so /var would be overlaid: over the scratch tmpfs (below /var) and
        // the state directory the data root is bound from.
        let private = vec![
            (p("/var/lib/docker"), host_bind("/var/st/b/var-lib-docker")),
            (p("/var/x/y"), harness(0o755)),
        ];
        let inp = Inputs {
            scratch: Path::new("/var/st/b/scratch"),
            ..inputs(&private, &[])
        };
        let err = plan(&inp, &host(&["/var", "/var/lib", "/var/lib/docker"])).unwrap_err();
        assert!(
            err.to_string().contains("would cover /var/st/b/scratch"),
            "{err}"
        );
    }

    #[test]
    fn a_bind_from_below_another_private_path_is_refused() {
        // /etc/passwd sorts before /tmp, so its source is still the host's; /var/passwd does not.
        let ok = vec![
            (p("/etc/passwd"), host_bind("/tmp/files/passwd")),
            (p("/tmp"), host_bind("/st/b/tmp")),
        ];
        plan(&inputs(&ok, &[]), &host(&["/etc", "/etc/passwd", "/tmp"])).unwrap();
        let bad = vec![
            (p("/var/passwd"), host_bind("/tmp/files/passwd")),
            (p("/tmp"), host_bind("/st/b/tmp")),
        ];
        let err = plan(&inputs(&bad, &[]), &host(&["/var", "/var/passwd", "/tmp"])).unwrap_err();
        assert!(
            err.to_string().contains("the source is below /tmp"),
            "{err}"
        );
    }

    #[test]
    fn the_order_check_refuses_hidden_mounts_host_writes_and_layers_off_tmpfs() {
        let cases = [
            (
                vec![
                    bind("/st/a", "/var/lib/docker"),
                    tmpfs_step("/var/lib", 0o755),
                ],
                "would cover /var/lib/docker",
            ),
            (
                vec![tmpfs_step("/run", 0o755), tmpfs_step("/run", 0o755)],
                "would cover /run",
            ),
            (vec![mkdir("/var/lib/x")], "would be made on the host"),
            (
                vec![MountStep::Symlink {
                    to: p("x"),
                    link: p("/etc/y"),
                }],
                "would be made on the host",
            ),
            (
                vec![
                    bind("/st/scratch", "/st/scratch"),
                    MountStep::Overlay {
                        target: p("/opt"),
                        upper: p("/st/scratch/u"),
                        work: p("/st/scratch/w"),
                        userxattr: false,
                    },
                ],
                "/st/scratch/u is not on a tmpfs",
            ),
            (
                vec![tmpfs_step("/tmp", 0o1777), bind("/tmp/x", "/opt/x")],
                "the source is below /tmp",
            ),
        ];
        for (steps, words) in cases {
            let err = check_order(&steps).unwrap_err().to_string();
            assert!(err.contains(words), "{steps:?}: {err}");
        }
        check_order(&[
            MountStep::MakeRprivate,
            tmpfs_step("/run", 0o755),
            mkdir("/run/a"),
            tmpfs_step("/run/a", 0o755),
        ])
        .unwrap();
    }

    /// The layer of a container in `/st/c`, for the image `/img`.
    fn root() -> RootLayer<'static> {
        RootLayer {
            lower: Path::new("/img"),
            upper: Path::new("/st/c/upper"),
            work: Path::new("/st/c/work"),
            merged: Path::new("/st/c/rootfs"),
            userxattr: true,
        }
    }

    fn image_inputs<'a>(private: &'a [(PathBuf, Private)]) -> RootfsInputs<'a> {
        RootfsInputs {
            root: root(),
            private,
            file_sources: &[],
            cgroup_binds: &[],
            cgroup_links: &[],
            devices: &[],
            shm: Shm::Fresh(TmpfsOptions::docker_shm()),
        }
    }

    #[test]
    fn an_image_box_refuses_a_private_path_given_twice() {
        // A compose tmpfs on the data root would have hidden the box's disk directory.
        let private = vec![
            (p("/var/lib/docker"), host_bind("/st/b/var-lib-docker")),
            (p("/var/lib/docker"), harness(0o755)),
        ];
        let err = rootfs_plan(&image_inputs(&private)).unwrap_err();
        assert!(
            err.to_string().contains("/var/lib/docker is given twice"),
            "{err}"
        );
    }

    #[test]
    fn a_containers_root_is_an_overlay_of_the_image_with_its_layer_on_the_hosts_disk() {
        let steps = rootfs_plan(&image_inputs(&[])).unwrap();
        assert_eq!(steps[0], MountStep::MakeRprivate);
        assert_eq!(
            steps[1],
            MountStep::RootOverlay {
                lower: p("/img"),
                upper: p("/st/c/upper"),
                work: p("/st/c/work"),
                target: p("/st/c/rootfs"),
                userxattr: true,
            }
        );
        // Everything else goes into the overlay, never into the image's tree.
        for s in &steps[2..] {
            let json = serde_json::to_string(s).unwrap();
            assert!(!json.contains("\"/img"), "{s:?} touches the image's tree");
        }
        assert_eq!(
            steps.last(),
            Some(&MountStep::PivotRoot {
                root: p("/st/c/rootfs")
            })
        );
        // Docker's /dev/shm and /dev/mqueue.
        assert!(steps.contains(&MountStep::Tmpfs {
            target: p("/st/c/rootfs/dev/shm"),
            options: TmpfsOptions::docker_shm()
        }));
        assert!(steps.contains(&MountStep::Mqueue {
            target: p("/st/c/rootfs/dev/mqueue")
        }));
        // An upper layer the box would have to mount first (on its own tmpfs, or in the
        // overlay itself) is refused: overlayfs takes no upper layer on overlayfs, and the
        // container's layer must outlive the start.
        let err = check_order(&[
            tmpfs_step("/st", 0o755),
            MountStep::RootOverlay {
                lower: p("/img"),
                upper: p("/st/c/upper"),
                work: p("/st/c/work"),
                target: p("/st/c/rootfs"),
                userxattr: true,
            },
        ])
        .unwrap_err();
        assert!(err.to_string().contains("host's disk"), "{err}");
        // Overlay options are split at commas.
        let bad = RootLayer {
            upper: Path::new("/st/c,x/upper"),
            ..root()
        };
        let err = rootfs_plan(&RootfsInputs {
            root: bad,
            ..image_inputs(&[])
        })
        .unwrap_err();
        assert!(err.to_string().contains("overlayfs options"), "{err}");
    }

    #[test]
    fn a_pod_start_binds_the_sandboxs_dev_shm_instead_of_a_fresh_tmpfs() {
        let steps = rootfs_plan(&RootfsInputs {
            shm: Shm::Sandbox(p("/st/c/pod-shm")),
            ..image_inputs(&[])
        })
        .unwrap();
        assert!(steps.contains(&bind("/st/c/pod-shm", "/st/c/rootfs/dev/shm")));
        assert!(!steps.iter().any(|s| matches!(
            s,
            MountStep::Tmpfs { target, .. } if target == Path::new("/st/c/rootfs/dev/shm")
        )));
    }

    #[test]
    fn a_path_inside_another_private_path_is_created_there_not_overlaid() {
        let private = vec![
            (p("/tmp"), host_bind("/st/b/tmp")),
            (p("/tmp/runner"), host_bind("/st/b/runner")),
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
            let private = vec![(p(bad), harness(0o755))];
            assert!(
                plan(&inputs(&private, &[]), &|_| true).is_err(),
                "{bad} accepted"
            );
        }
        // A missing top-level directory would need an overlay on /.
        let private = vec![(p("/nowhere/x"), harness(0o755))];
        let err = plan(&inputs(&private, &[]), &|q| q == Path::new("/")).unwrap_err();
        assert!(
            err.to_string().contains("nearest existing parent is /"),
            "{err}"
        );
    }

    #[test]
    fn an_image_tree_becomes_the_root_with_kernel_filesystems_devices_and_private_paths() {
        let private = vec![
            (p("/tmp"), harness(0o1777)),
            (
                p("/var/lib/docker"),
                Private::Bind {
                    source: p("/st/b/var-lib-docker"),
                },
            ),
            (p("/run"), harness(0o755)),
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
            private: &private,
            file_sources: &[p("/st/hosts")],
            cgroup_binds: &binds,
            cgroup_links: &links,
            devices: &["null", "tty"],
            ..image_inputs(&[])
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
        let sysfs = pos(&MountStep::Sysfs {
            target: p("/st/c/rootfs/sys"),
        });
        let cg_tmpfs = pos(&tmpfs_step("/st/c/rootfs/sys/fs/cgroup", 0o755));
        let cg_bind = pos(&bind(
            "/sys/fs/cgroup/cpu,cpuacct/b",
            "/st/c/rootfs/sys/fs/cgroup/cpu,cpuacct",
        ));
        let link = pos(&MountStep::Symlink {
            to: p("cpu,cpuacct"),
            link: p("/st/c/rootfs/sys/fs/cgroup/cpu"),
        });
        assert!(sysfs < cg_tmpfs && cg_tmpfs < cg_bind && cg_tmpfs < link);
        let dev = pos(&tmpfs_step("/st/c/rootfs/dev", 0o755));
        let null = pos(&bind("/dev/null", "/st/c/rootfs/dev/null"));
        assert!(dev < null);
        pos(&MountStep::Devpts {
            target: p("/st/c/rootfs/dev/pts"),
        });
        // Private paths in path order; a file source is bound onto a file.
        let hosts = pos(&MountStep::Touch {
            path: p("/st/c/rootfs/etc/hosts"),
        });
        let tmp = pos(&tmpfs_step("/st/c/rootfs/tmp", 0o1777));
        let data = pos(&bind("/st/b/var-lib-docker", "/st/c/rootfs/var/lib/docker"));
        assert!(hosts < tmp && tmp < data);
        assert_eq!(
            steps.last(),
            Some(&MountStep::PivotRoot {
                root: p("/st/c/rootfs")
            })
        );
        // The box owns / , /proc, /sys and /dev.
        let private = vec![(p("/dev/x"), harness(0o755))];
        let err = rootfs_plan(&image_inputs(&private)).unwrap_err();
        assert!(err.to_string().contains("set up by the box"), "{err}");
    }

    #[test]
    fn overlay_bases_with_option_separators_are_refused() {
        let private = vec![(p("/a,b/x"), harness(0o755))];
        let err = plan(&inputs(&private, &[]), &|q| q == Path::new("/a,b")).unwrap_err();
        assert!(err.to_string().contains("overlayfs options"), "{err}");
    }
}
