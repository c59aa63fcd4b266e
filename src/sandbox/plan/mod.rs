//! The life's mount table and files, decided purely from what the container is (its runtime, its
//! volume, how its `/tmp` is mounted, which devices it has) and the settings. The life's init
//! performs the steps in order (`super::mounts`); sysrunner writes the files into the life's fresh
//! upper layer before the life starts. Nothing here reads or changes the system.
//!
//! The life's root is an overlay: lower = the container's root mount (`lowerdir=/`: the one mount,
//! none of its submounts), upper and work = fresh directories on the data volume. Everything else
//! the life sees is on the allow-list below, mounted into that root, never by covering something:
//! a job is root in the container's user namespace, and may unmount whatever it sees mounted in
//! the life (only mounts copied across a user-namespace boundary are locked), so nothing secret
//! may lie beneath any mount it can reach. What of the container's root must not show is hidden by
//! the upper layer's content instead (an opaque directory, a whiteout), which no unmount undoes.
//!
//! The allow-list, and why each entry is there:
//! - `proc` fresh, of the life's PID namespace (a job sees only the life's processes); under sysbox
//!   sysbox-fs makes it the emulated one, as for any procfs mounted in the container;
//! - `sys` fresh, of the life's network namespace (its devices only);
//! - `/dev` a tmpfs with the container's device nodes bound in one by one (a user namespace cannot
//!   `mknod`, and nodes on a superblock mounted in one never work), a new `devpts` instance, a
//!   fresh `/dev/shm` and `mqueue` for the life's IPC namespace;
//! - `/sys/fs/cgroup` fresh, of the life's cgroup namespace (`super::cgroup` says what);
//! - `/run` a fresh tmpfs (dockerd's socket and pid files);
//! - `/tmp` made like the container's: a tmpfs with its options where it is one, else a directory
//!   of the life on the volume (as Kubernetes' emptyDir is a directory on the node's disk);
//! - `/var/lib/docker` ← the volume's `data/` (dockerd's data root; emptied per life unless
//!   `DOCKER_DATA=keep`);
//! - what sysbox backs on the host besides `/var/lib/docker` (`/var/lib/kubelet`, k0s, k3s, rke2,
//!   `/var/lib/buildkit`, containerd's overlayfs snapshotter) ← per-life directories on the
//!   volume, because an overlay cannot hold another overlay's upper layer and those tools stack
//!   overlays there;
//! - the container paths the operator lists for jobs (`LIFE_BINDS`, e.g. a cache volume);
//! - under `--privileged`, `securityfs` (as moby's dind does for AppArmor).
//!
//! Files written into the upper layer: `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf` (copies,
//! never the container's own files, which Docker and Kubernetes keep across restarts and
//! sysrunner itself resolves names with; the resolver is the life's relay), the sudoers rule
//! `RUNNER_SUDO` asks for (an empty one without sudo, over any rule the container's layer holds). Opaque directories: every path sysbox backs on the host (at a container
//! stop sysbox copies them back into the container's layer, which is the life's lower layer) and
//! sysrunner's own old state directory; so a job that unmounts `/var/lib/docker` finds an empty
//! directory, not sysrunner's state or an earlier life's images.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where, on the data volume, each part of a life lives. The volume is the container's
/// `/var/lib/docker` (sysbox's host-backed directory, the privileged image's volume, a Kubernetes
/// emptyDir).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub volume: PathBuf,
    /// dockerd's data root, bound at `/var/lib/docker` in the life.
    pub data: PathBuf,
    /// The life's overlay: `upper`, `work`, and `root` (the mount point of the merged root).
    pub life: PathBuf,
    /// Per-life directories: the special directories, `/tmp` where it is on disk.
    pub dirs: PathBuf,
    /// sysrunner's own state (the registration record): outside what the life gets.
    pub state: PathBuf,
    /// What earlier lives left (their overlay, their per-life directories, dockerd's data under
    /// DOCKER_DATA=ephemeral), moved here at once and deleted beside the next life.
    pub trash: PathBuf,
}

impl Layout {
    pub fn new(volume: &Path) -> Layout {
        Layout {
            volume: volume.to_path_buf(),
            data: volume.join("data"),
            life: volume.join("life"),
            dirs: volume.join("life-dirs"),
            state: volume.join("sysrunner"),
            trash: volume.join("trash"),
        }
    }

    pub fn upper(&self) -> PathBuf {
        self.life.join("upper")
    }

    pub fn work(&self) -> PathBuf {
        self.life.join("work")
    }

    pub fn root(&self) -> PathBuf {
        self.life.join("root")
    }
}

/// The paths sysbox mounts from host directories besides the data root (sysbox-runc's "special
/// dirs"): tools that stack overlays keep their layers there.
pub const SPECIAL_DIRS: &[(&str, &str)] = &[
    ("/var/lib/kubelet", "kubelet"),
    ("/var/lib/k0s", "k0s"),
    ("/var/lib/rancher/k3s", "k3s"),
    ("/var/lib/rancher/rke2", "rke2"),
    ("/var/lib/buildkit", "buildkit"),
    (
        "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs",
        "containerd-overlayfs",
    ),
];

/// Where sysrunner kept its state before the sandbox, in the container's own layer.
pub const OLD_STATE: &str = "/var/lib/sysrunner";

/// The runtime as the sandbox cares about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A user namespace (sysbox, another one): a job is root only in it.
    Namespaced,
    /// `--privileged`: a job that is root is root on the host.
    Privileged,
}

/// How the container's `/tmp` is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Tmp {
    /// A tmpfs (compose's `tmpfs:`): the life gets a fresh one with these options (`size=…`,
    /// `mode=…`, `noexec`, …, as the mount table shows them).
    Tmpfs { options: Vec<String> },
    /// A directory of the container's root or a volume: the life gets a directory of its own.
    Disk,
}

/// What the plan is made from.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub kind: Kind,
    pub layout: &'a Layout,
    /// Filesystem type of the volume (the data root's mount).
    pub volume_fstype: Option<&'a str>,
    /// Filesystem type of the container's root mount.
    pub root_fstype: Option<&'a str>,
    pub tmp: Tmp,
    /// Device nodes of the container's `/dev` to bind in (`null`, `zero`, `fuse`, …).
    pub devices: &'a [String],
    /// `LIFE_BINDS`: container paths bound read-write at the same path in the life.
    pub binds: &'a [PathBuf],
    /// The life's hostname.
    pub hostname: &'a str,
    /// The life's address (for `/etc/hosts`).
    pub address: std::net::Ipv4Addr,
    /// The life's `/etc/resolv.conf`.
    pub resolv_conf: &'a str,
    /// The sudoers rule for the runner user, or none.
    pub sudoers: Option<&'a str>,
    /// Mounts the life's cgroup namespace needs at `/sys/fs/cgroup` (from `super::cgroup`).
    pub cgroup_mounts: Vec<Step>,
    /// Directories the runner user must own in the life (the runner release's).
    pub runner_dir: &'a Path,
    pub runner_uid: u32,
    pub runner_gid: u32,
}

/// One step of the life's init, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Step {
    /// `mount --make-rprivate /`: nothing the life mounts propagates back to sysrunner's
    /// namespace.
    MakeRprivate,
    /// The life's root: an overlay of the container's root mount at `target`.
    Overlay {
        target: PathBuf,
        upper: PathBuf,
        work: PathBuf,
    },
    Proc {
        target: PathBuf,
    },
    Sysfs {
        target: PathBuf,
    },
    Tmpfs {
        target: PathBuf,
        /// Mount data: `mode=…`, `size=…`.
        data: String,
        nosuid: bool,
        nodev: bool,
        noexec: bool,
    },
    Devpts {
        target: PathBuf,
    },
    Mqueue {
        target: PathBuf,
    },
    Securityfs {
        target: PathBuf,
    },
    Cgroup2 {
        target: PathBuf,
    },
    /// A cgroup v1 hierarchy (`options`: its controllers, or `name=…`).
    CgroupV1 {
        target: PathBuf,
        options: String,
    },
    Bind {
        source: PathBuf,
        target: PathBuf,
        /// A file: its mount point is a file.
        file: bool,
    },
    Mkdir {
        path: PathBuf,
    },
    /// Makes the mount at `target` read-only (a bind remount: only this mount's flags change).
    RemountReadOnly {
        target: PathBuf,
    },
    Symlink {
        to: PathBuf,
        link: PathBuf,
    },
    /// `pivot_root` into `root` and detach the old root: from then on the life sees only its root.
    PivotRoot {
        root: PathBuf,
    },
    /// `mount --make-rshared /` in the life (dockerd's mounts propagate into its containers).
    MakeRshared,
    /// Gives the directories below `path` (not its files) to the runner user: its release stays
    /// root-owned and read-only, but it may add, replace and remove files (`.runner`, `_work`).
    ChownDirs {
        path: PathBuf,
        uid: u32,
        gid: u32,
    },
}

/// A file of the life, written into its upper layer before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct File {
    /// Absolute path in the life.
    pub path: PathBuf,
    pub contents: String,
    pub mode: u32,
}

/// Everything a life is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub files: Vec<File>,
    /// Directories made opaque in the upper layer: the lower layer's content there never shows.
    pub opaque: Vec<PathBuf>,
    /// Per-life directories to create on the volume: (directory, owner uid/gid).
    pub life_dirs: Vec<PathBuf>,
    pub hostname: String,
}

/// Why a life cannot be sandboxed here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum Unavailable {
    #[error(
        "the data volume ({volume}) is on {fstype}, which cannot hold an overlay's upper layer: mount a volume on /var/lib/docker (sysbox does; the privileged compose file does)"
    )]
    VolumeOnOverlay { volume: String, fstype: String },
    #[error(
        "the container's root is on {0}, already two layers deep (sysbox on a shiftfs host): the kernel refuses a third overlay"
    )]
    RootTooDeep(String),
    #[error("{0}")]
    Probe(String),
}

/// The life's hostname: fixed, so that a job cannot learn the container's id from it.
pub const HOSTNAME: &str = "runner";

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

/// Where a life path lies under the merged root's mount point.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

pub fn plan(i: &Input) -> Result<Plan, Unavailable> {
    if let Some(fs @ ("overlay" | "aufs" | "shiftfs")) = i.volume_fstype {
        return Err(Unavailable::VolumeOnOverlay {
            volume: i.layout.volume.display().to_string(),
            fstype: fs.to_string(),
        });
    }
    if let Some(fs @ "shiftfs") = i.root_fstype {
        return Err(Unavailable::RootTooDeep(fs.to_string()));
    }
    let root = i.layout.root();
    let r = |path: &str| under(&root, Path::new(path));
    let mut steps = vec![
        Step::MakeRprivate,
        Step::Overlay {
            target: root.clone(),
            upper: i.layout.upper(),
            work: i.layout.work(),
        },
        Step::Proc { target: r("/proc") },
        Step::Sysfs { target: r("/sys") },
    ];
    steps.extend(i.cgroup_mounts.iter().map(|s| rebase(s, &root)));
    if i.kind == Kind::Privileged {
        steps.push(Step::Securityfs {
            target: r("/sys/kernel/security"),
        });
    }
    steps.push(Step::Tmpfs {
        target: r("/dev"),
        data: "mode=755,size=65536k".into(),
        nosuid: true,
        nodev: false,
        noexec: true,
    });
    for d in i.devices {
        steps.push(Step::Bind {
            source: Path::new("/dev").join(d),
            target: r("/dev").join(d),
            file: true,
        });
    }
    steps.extend([
        Step::Mkdir {
            path: r("/dev/pts"),
        },
        Step::Devpts {
            target: r("/dev/pts"),
        },
        Step::Symlink {
            to: p("pts/ptmx"),
            link: r("/dev/ptmx"),
        },
        Step::Mkdir {
            path: r("/dev/shm"),
        },
        Step::Tmpfs {
            target: r("/dev/shm"),
            data: "mode=1777,size=65536k".into(),
            nosuid: true,
            nodev: true,
            noexec: true,
        },
        Step::Mkdir {
            path: r("/dev/mqueue"),
        },
        Step::Mqueue {
            target: r("/dev/mqueue"),
        },
        Step::Symlink {
            to: p("/proc/self/fd"),
            link: r("/dev/fd"),
        },
        Step::Tmpfs {
            target: r("/run"),
            data: "mode=755,size=262144k".into(),
            nosuid: true,
            nodev: true,
            noexec: false,
        },
    ]);
    let mut life_dirs = Vec::new();
    match &i.tmp {
        Tmp::Tmpfs { options } => {
            let flag = |f: &str| options.iter().any(|o| o == f);
            let data: Vec<&str> = options
                .iter()
                .map(String::as_str)
                .filter(|o| o.starts_with("size=") || o.starts_with("mode="))
                .collect();
            steps.push(Step::Tmpfs {
                target: r("/tmp"),
                data: if data.is_empty() {
                    "mode=1777".into()
                } else {
                    data.join(",")
                },
                nosuid: flag("nosuid"),
                nodev: flag("nodev"),
                noexec: flag("noexec"),
            });
        }
        Tmp::Disk => {
            let dir = i.layout.dirs.join("tmp");
            life_dirs.push(dir.clone());
            steps.push(Step::Bind {
                source: dir,
                target: r("/tmp"),
                file: false,
            });
        }
    }
    steps.push(Step::Bind {
        source: i.layout.data.clone(),
        target: r("/var/lib/docker"),
        file: false,
    });
    for (path, name) in SPECIAL_DIRS {
        let dir = i.layout.dirs.join(name);
        life_dirs.push(dir.clone());
        steps.push(Step::Mkdir { path: r(path) });
        steps.push(Step::Bind {
            source: dir,
            target: r(path),
            file: false,
        });
    }
    for b in i.binds {
        steps.push(Step::Mkdir {
            path: under(&root, b),
        });
        steps.push(Step::Bind {
            source: b.clone(),
            target: under(&root, b),
            file: false,
        });
    }
    steps.extend([
        Step::PivotRoot { root: root.clone() },
        Step::MakeRshared,
        Step::ChownDirs {
            path: i.runner_dir.to_path_buf(),
            uid: i.runner_uid,
            gid: i.runner_gid,
        },
    ]);

    let mut files = vec![
        File {
            path: p("/etc/hostname"),
            contents: format!("{}\n", i.hostname),
            mode: 0o644,
        },
        File {
            path: p("/etc/hosts"),
            contents: hosts(i.hostname, i.address),
            mode: 0o644,
        },
        File {
            path: p("/etc/resolv.conf"),
            contents: i.resolv_conf.to_string(),
            mode: 0o644,
        },
    ];
    // Always written: without sudo, a rule an earlier, unsandboxed life left in the container's
    // layer (the life's lower layer) must not show through.
    files.push(File {
        path: p("/etc/sudoers.d/sysrunner"),
        contents: i
            .sudoers
            .map_or_else(|| "# RUNNER_SUDO=false\n".to_string(), str::to_string),
        mode: 0o440,
    });
    let mut opaque: Vec<PathBuf> = vec![p("/var/lib/docker"), p(OLD_STATE)];
    opaque.extend(SPECIAL_DIRS.iter().map(|(path, _)| p(path)));
    Ok(Plan {
        steps,
        files,
        opaque,
        life_dirs,
        hostname: i.hostname.to_string(),
    })
}

/// A step of `super::cgroup`, given relative to the life's root, placed under the mount point.
fn rebase(s: &Step, root: &Path) -> Step {
    match s {
        Step::Cgroup2 { target } => Step::Cgroup2 {
            target: under(root, target),
        },
        Step::CgroupV1 { target, options } => Step::CgroupV1 {
            target: under(root, target),
            options: options.clone(),
        },
        Step::Tmpfs {
            target,
            data,
            nosuid,
            nodev,
            noexec,
        } => Step::Tmpfs {
            target: under(root, target),
            data: data.clone(),
            nosuid: *nosuid,
            nodev: *nodev,
            noexec: *noexec,
        },
        Step::Mkdir { path } => Step::Mkdir {
            path: under(root, path),
        },
        Step::RemountReadOnly { target } => Step::RemountReadOnly {
            target: under(root, target),
        },
        Step::Symlink { to, link } => Step::Symlink {
            to: to.clone(),
            link: under(root, link),
        },
        other => other.clone(),
    }
}

/// `/etc/hosts` as Docker writes it for a container.
pub fn hosts(hostname: &str, address: std::net::Ipv4Addr) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n{address}\t{hostname}\n"
    )
}

#[cfg(test)]
mod tests;
