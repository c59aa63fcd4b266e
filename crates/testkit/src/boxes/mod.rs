//! Namespace "boxes": run commands the way they run in a sysbox container or a privileged one,
//! on a plain host, without a container engine. Owns each box's state directory (under
//! `/var/tmp/sysrunner-boxes` unless told otherwise), its `<parent>/<box-name>` cgroup
//! directories, its namespaces and processes; all go on [`TestBox::stop`] or drop, also when a
//! test panics. Must not touch the host's own `/var/lib/docker`, `/etc/docker`, `/run`, `/tmp` or
//! home (the box's copies are mounted over them inside the box's mount namespace only), any
//! other cgroup, or any process outside the box.
//!
//! A box is:
//! - **sysbox-like**: a new user namespace mapping uid/gid 0..65536 to a host range (slot `N`
//!   of 32 machine-wide slots gets `100000 + N * 65536`, so parallel boxes, also from other
//!   checkouts, never share host ids), full capabilities inside;
//! - **privileged-like**: real root, identity map, the host's bounding set;
//!
//! and both have their own mount, net (only `lo`, up), pid, uts (hostname = box name), ipc and
//! cgroup namespaces, delegated rw cgroups bound over `/sys/fs/cgroup/...`, a fresh `/proc`,
//! tmpfs on `/run` and `/etc/docker`, and host-disk directories owned by the box's root on
//! `/var/lib/docker` (ext4 for overlay2), `/tmp`, the runner directory and `/home/runner`; the
//! builder adds or replaces private paths (the harness's tmpfs, Docker's `--tmpfs` as Docker
//! mounts it, binds). A mount point missing on the host is made inside an overlay of its nearest
//! existing parent (upper layer on a box-private tmpfs), so the host gains no directory either;
//! every overlay is mounted before any private path, so a private path is the box's whether or
//! not the host has it (`mounts` checks that no step hides an earlier one).
//!
//! A box on an image's tree ([`Builder::rootfs`]) has a container's root as Docker and sysbox
//! make it: an overlay whose lower layer is the unpacked image (never written) and whose upper
//! and work directories are the box's on the host's disk, so `/` inside is overlayfs and the
//! kernel refuses an overlay with its upper layer on it, as in every real container; the
//! box's `/var/lib/docker` is a host-disk directory bound in, where such an upper layer mounts.
//! A [`Container`] (see `container`) keeps that layer, its volume and Docker's files (`files`)
//! across starts, each start a box of its own, in either [`RestartMode`], and attaches each
//! network namespace it gets to a [`network::Network`] whose resolver is [`crate::dns`].
//!
//! How it starts: the host spawns the kit's own binary (`sysrunner-testkit`, see
//! [`crate::binaries`]) as the hidden `box-init` (see `init`), which
//! unshares its user namespace and waits on a pipe; the host writes its uid/gid maps (root may
//! write another process's maps, so no newuidmap or /etc/subuid), moves it into the box's
//! cgroups (`cgroup` computes that plan from the host's v1/hybrid/v2 layout) and says go; it
//! unshares the rest and forks the box's PID 1, which mounts (`mounts`), reports ready and, after
//! the caller's extra setup (`Builder::before_start`, e.g. moving a veth end into the box), execs
//! the caller's PID 1 program or stays as a reaping init. Commands enter a running box through
//! the hidden `box-exec` (see `exec`). `box-init` holds the read end of a pipe whose write end
//! only the host holds: when the host drops the box or dies, PID 1 is killed, and the kernel
//! kills the rest of the box's pid namespace.

mod cgroup;
pub mod cli;
mod container;
mod error;
mod exec;
pub mod files;
mod init;
mod mounts;
pub mod network;
mod spec;
mod sys;
mod tmpfs;

pub use cgroup::{CgroupParent, Hierarchy, Layout, Version, detect as detect_cgroups};
pub use container::{Container, ContainerBuilder, RestartMode};
pub use error::Error;

use super::lock::{self, Lock};
use cgroup::HostFs;
use error::{io_err, nix_err};
use mounts::{MountStep, Private};
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, pipe2};
use serde::{Deserialize, Serialize};
use spec::{ExecSpec, InitSpec, Status};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use tmpfs::TmpfsOptions;

/// Which container runtime a box imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BoxKind {
    /// sysbox: user namespace, root mapped to a 65536-wide host range, full capabilities inside.
    SysboxLike,
    /// `docker run --privileged`: real root, identity map, writable cgroups.
    PrivilegedLike,
}

/// The box's `/home/runner`, which is also `HOME` for commands from [`TestBox::command`].
pub const HOME: &str = "/home/runner";
/// Where the runner directory is inside the box unless [`Builder::runner_dir`] says otherwise.
pub const RUNNER_DIR: &str = "/opt/actions-runner";
/// The PATH a container's entrypoint is looked up in when its environment has none (runc's and
/// Docker's default), and the PATH the rig gives a life.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Where boxes keep their host-side directories unless [`Builder::state_root`] says otherwise.
/// `/var/tmp` rather than `/tmp`: it is on disk on every common host, and dockerd's overlay2 needs
/// a disk filesystem under `/var/lib/docker`.
pub const STATE_ROOT: &str = "/var/tmp/sysrunner-boxes";

const SLOTS: u32 = 32;
const UID_BASE: u32 = 100_000;
const UID_SPAN: u32 = 65_536;
const OVERLAYFS_MAGIC: i64 = 0x794c_7630;

/// Host-side paths of a box's private directories (valid while the box lives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The box's state directory; everything below it is removed on teardown.
    pub state: PathBuf,
    /// Mounted on `/var/lib/docker` in the box.
    pub var_lib_docker: PathBuf,
    /// Mounted on `/tmp` in the box (unless the builder gave `/tmp` a mount of its own).
    pub tmp: PathBuf,
    /// Mounted on the runner directory in the box.
    pub runner: PathBuf,
    /// Mounted on `/home/runner` in the box.
    pub home: PathBuf,
    /// The box mounts its scratch tmpfs here (overlay layers); stays empty on the host.
    scratch: PathBuf,
}

impl Paths {
    fn under(state: PathBuf) -> Paths {
        Paths {
            var_lib_docker: state.join("var-lib-docker"),
            tmp: state.join("tmp"),
            runner: state.join("runner"),
            home: state.join("home"),
            scratch: state.join("scratch"),
            state,
        }
    }
}

/// A box's uid (and gid) map: `inside outside count`, as `/proc/self/uid_map` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

type Hook = Box<dyn FnOnce(&TestBox) -> Result<(), Error>>;

/// Options for a box; [`Builder::start`] creates it.
pub struct Builder {
    kind: BoxKind,
    exe: Option<PathBuf>,
    sysrunner: Option<PathBuf>,
    state_root: PathBuf,
    runner_dir: PathBuf,
    extra: Vec<(PathBuf, Private)>,
    cgroup_parent: CgroupParent,
    cgroup_layout: Option<Layout>,
    pid1: Option<Vec<String>>,
    before_start: Option<Hook>,
    start_timeout: Duration,
    command_timeout: Duration,
    rootfs: Option<PathBuf>,
    /// What only a container's start sets (see `container`).
    start: StartOptions,
}

/// A container start's part of a box: its layer, hostname, PID 1's environment and output, the
/// pod it joins. All `None` for a plain box.
#[derive(Default)]
struct StartOptions {
    /// The container's writable layer and root mount point, instead of the box's own.
    layer: Option<Layer>,
    hostname: Option<String>,
    env: Option<Vec<String>>,
    cwd: Option<PathBuf>,
    log: Option<PathBuf>,
    pod: Option<spec::PodJoin>,
    /// The pod sandbox's `/dev/shm`, bound instead of a fresh tmpfs.
    shm: Option<PathBuf>,
}

/// Host directories of an overlay root: the writable layer and the directory it is mounted on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layer {
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
}

impl Layer {
    fn under(dir: &Path) -> Layer {
        Layer {
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("rootfs"),
        }
    }

    /// Creates the three directories for an image tree: the upper layer's root takes the tree
    /// root's mode (the root directory a container shows is its upper's), all owned by the box's
    /// root, which mounts the overlay.
    fn make(&self, tree: &Path, uid: u32, gid: u32) -> Result<(), Error> {
        let mode = std::fs::metadata(tree)
            .map_err(io_err(format!("stat {}", tree.display())))?
            .mode()
            & 0o7777;
        mkdir(&self.upper, mode, uid, gid)?;
        mkdir(&self.work, 0o700, uid, gid)?;
        mkdir(&self.merged, 0o755, uid, gid)
    }
}

impl Builder {
    /// The `sysrunner-testkit` binary the box runs as `box-init` and `box-exec`; by default the
    /// one [`crate::binaries::testkit`] finds (this process's own executable in the demo).
    pub fn exe(mut self, path: impl Into<PathBuf>) -> Self {
        self.exe = Some(path.into());
        self
    }

    /// A `sysrunner` binary for the box: copied into the box's state directory, where the box's
    /// root can run it as [`TestBox::sysrunner_in_box`].
    pub fn sysrunner(mut self, path: impl Into<PathBuf>) -> Self {
        self.sysrunner = Some(path.into());
        self
    }

    /// Where the box's host-side directories go. Must not be on overlayfs.
    pub fn state_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_root = dir.into();
        self
    }

    /// The runner directory's path inside the box (default [`RUNNER_DIR`]).
    pub fn runner_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.runner_dir = path.into();
        self
    }

    /// A private tmpfs on `path` in the box (e.g. `/var/lib/sysrunner`, `/etc/sudoers.d`): it lives
    /// as long as the box, across every command run in it. Mounted `nosuid,nodev`, executable:
    /// the harness's own kind of tmpfs; [`Builder::tmpfs_docker`] mounts one as Docker does.
    pub fn tmpfs(self, path: impl Into<PathBuf>) -> Self {
        self.tmpfs_mode(path, 0o755)
    }

    /// A private tmpfs with this mode (`/tmp`: 0o1777), otherwise as [`Builder::tmpfs`].
    pub fn tmpfs_mode(mut self, path: impl Into<PathBuf>, mode: u32) -> Self {
        self.extra
            .push((path.into(), Private::Tmpfs(TmpfsOptions::harness(mode))));
        self
    }

    /// A private tmpfs as `docker run --tmpfs SPEC` or a compose file's `tmpfs: [SPEC]` makes it:
    /// SPEC is `PATH[:OPTIONS]`, mounted `rw,nosuid,nodev,noexec` unless OPTIONS (comma-separated:
    /// `exec`, `suid`, `dev`, `ro`, `noatime`, `size=64m`, `mode=1777`, `uid=`, `gid=`, …) say
    /// otherwise, with the kernel's mode (1777) and size (half the RAM) when they do not
    /// (`/tmp:exec,mode=1777,size=1g`). An option Docker would refuse, or one the box does not
    /// imitate, is an error naming it. Like every [`Builder::tmpfs`] or [`Builder::bind`] path,
    /// it replaces the box's own mount on the same path (its `/tmp`, say).
    pub fn tmpfs_docker(mut self, spec: &str) -> Result<Self, Error> {
        let (path, options) = tmpfs::parse_docker(spec).map_err(Error::Invalid)?;
        self.extra.push((path, Private::Tmpfs(options)));
        Ok(self)
    }

    /// Runs the box on an image's own filesystem instead of the host's, as Docker and sysbox run
    /// a container (`docker run --rm`; [`Container`] keeps one across starts): the box's root is
    /// an overlay whose lower layer is `tree` (an unpacked image, owned as in the image, never
    /// written) and whose upper layer is a directory of the box's on the host's disk, with a fresh
    /// proc and sysfs, the delegated cgroups, a minimal /dev with Docker's `/dev/shm` and
    /// `/dev/mqueue`, the box's disk directory on `/var/lib/docker`, and the [`Builder::tmpfs`] /
    /// [`Builder::bind`] paths; nothing else of the host. A sysbox-like box first shifts the
    /// tree's owners into its id range (recorded in `<tree>.shift`, so a later box on the same
    /// tree shifts from there). The runner directory and home are the image's own.
    pub fn rootfs(mut self, tree: impl Into<PathBuf>) -> Self {
        self.rootfs = Some(tree.into());
        self
    }

    /// Binds a host file or directory over `target` in the box (e.g. a passwd file with the
    /// runner user). The source stays the caller's, and must not be below another private path
    /// that sorts before `target` (the box would bind its own copy): the plan refuses that.
    pub fn bind(mut self, source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        self.extra.push((
            target.into(),
            Private::Bind {
                source: source.into(),
            },
        ));
        self
    }

    pub fn cgroup_parent(mut self, parent: CgroupParent) -> Self {
        self.cgroup_parent = parent;
        self
    }

    /// Delegates from this layout instead of the detected one. For tests: on a hybrid host,
    /// `Layout::V2` of its unified hierarchy runs the v2 plan for real.
    pub fn cgroup_layout(mut self, layout: Layout) -> Self {
        self.cgroup_layout = Some(layout);
        self
    }

    /// Makes `argv` the box's PID 1 (as `sysrunner run` is in a container) instead of the built-in
    /// init. The box lives as long as it does; [`TestBox::wait`] returns its exit status.
    pub fn pid1<S: Into<String>>(mut self, argv: impl IntoIterator<Item = S>) -> Self {
        self.pid1 = Some(argv.into_iter().map(Into::into).collect());
        self
    }

    /// Runs `f` on the host once the box's namespaces and mounts exist, before its PID 1 program
    /// starts: e.g. move a veth end into `/proc/<box.pid()>/ns/net`.
    pub fn before_start(mut self, f: impl FnOnce(&TestBox) -> Result<(), Error> + 'static) -> Self {
        self.before_start = Some(Box::new(f));
        self
    }

    /// How long the box may take to start (default 60 s).
    pub fn start_timeout(mut self, t: Duration) -> Self {
        self.start_timeout = t;
        self
    }

    /// How long [`TestBox::run_shell`] and [`TestBox::output`] wait (default 180 s).
    pub fn command_timeout(mut self, t: Duration) -> Self {
        self.command_timeout = t;
        self
    }

    /// Creates the box. On any error, whatever was already created is removed again.
    pub fn start(mut self) -> Result<TestBox, Error> {
        let (slot, slot_lock) = acquire_slot()?;
        let hook = self.before_start.take();
        let mut b = self.launch(slot, Some(slot_lock), true)?;
        if let Some(f) = hook {
            f(&b)?;
        }
        b.release()?;
        Ok(b)
    }

    /// Everything up to the moment PID 1 would exec the caller's program: the box in `slot`
    /// with its namespaces, cgroups and mounts, waiting for [`TestBox::release`]. `owns_state`:
    /// the slot's state directory is this box's, made now and removed with it (a plain box);
    /// otherwise it is a container's, which made it and keeps it across starts.
    fn launch(self, slot: u32, lock: Option<Lock>, owns_state: bool) -> Result<TestBox, Error> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::Invalid("boxes need root".into()));
        }
        let exe = match self.exe {
            Some(e) => e,
            None => crate::binaries::locate_testkit().map_err(Error::Invalid)?,
        };
        let name = slot_name(slot);
        let (uid, gid) = slot_ids(self.kind, slot);
        let layout = match self.cgroup_layout {
            Some(l) => l,
            None => cgroup::detect(Path::new("/"))?,
        };
        let plan = cgroup::plan(
            &layout,
            &cgroup::Request {
                kind: self.kind,
                name: &name,
                uid,
                gid,
                parent: self.cgroup_parent,
            },
            &|p| std::fs::read_to_string(p).ok(),
        )?;
        let paths = Paths::under(self.state_root.join(&name));
        let layer = match (&self.rootfs, self.start.layer) {
            (Some(_), Some(l)) => Some(l),
            (Some(_), None) => Some(Layer::under(&paths.state)),
            (None, _) => None,
        };
        let mut b = TestBox {
            kind: self.kind,
            hostname: self.start.hostname.unwrap_or_else(|| name.clone()),
            paths,
            name,
            uid,
            gid,
            exe,
            sysrunner: self.sysrunner,
            runner_dir: self.runner_dir,
            extra: self.extra,
            plan,
            outer: None,
            pid1: None,
            pid_ns: 0,
            reaper: self.pid1.is_none(),
            life: None,
            ctl: None,
            command_timeout: self.command_timeout,
            torn_down: false,
            rootfs: self.rootfs,
            layer,
            shm: self.start.shm,
            owns_state,
            _slot: lock,
        };
        // The slot's lock is held, so anything under its name belongs to a box whose process
        // died without cleaning up (SIGKILL): remove it before reusing the name. A container's
        // start finds only its last start's cgroups (the container cleaned its directory).
        b.remove_everything()?;
        if owns_state {
            b.make_state_dirs()?;
            if let (Some(tree), Some(layer)) = (&b.rootfs, &b.layer) {
                super::image::shift_tree(tree, b.uid).map_err(io_err(format!(
                    "shift the owners of {} to {}",
                    tree.display(),
                    b.uid
                )))?;
                layer.make(tree, b.uid, b.gid)?;
            }
        }
        cgroup::apply(&HostFs, &b.plan.prepare)?;
        let mounts = b.mount_plan()?;
        b.spawn(
            mounts,
            Pid1 {
                argv: self.pid1,
                env: self.start.env,
                cwd: self.start.cwd,
                log: self.start.log,
                pod: self.start.pod,
            },
            self.start_timeout,
        )?;
        Ok(b)
    }
}

/// What the box's PID 1 runs, and how.
struct Pid1 {
    argv: Option<Vec<String>>,
    env: Option<Vec<String>>,
    cwd: Option<PathBuf>,
    /// Where box-init's and PID 1's stdout and stderr go (a container's log); else inherited.
    log: Option<PathBuf>,
    pod: Option<spec::PodJoin>,
}

/// `sysrunner-box-<slot>`.
fn slot_name(slot: u32) -> String {
    format!("sysrunner-box-{slot}")
}

/// The host uid and gid of a box's root in `slot`: a 65536-wide range of its own when sysbox-like.
fn slot_ids(kind: BoxKind, slot: u32) -> (u32, u32) {
    match kind {
        BoxKind::SysboxLike => {
            let base = UID_BASE + slot * UID_SPAN;
            (base, base)
        }
        BoxKind::PrivilegedLike => (0, 0),
    }
}

/// A running box. Dropping it tears it down (see [`TestBox::stop`]).
pub struct TestBox {
    kind: BoxKind,
    name: String,
    uid: u32,
    gid: u32,
    exe: PathBuf,
    sysrunner: Option<PathBuf>,
    paths: Paths,
    runner_dir: PathBuf,
    extra: Vec<(PathBuf, Private)>,
    plan: cgroup::Plan,
    /// The `box-init` supervisor, outside the box's pid namespace.
    outer: Option<Child>,
    /// Host pid of the box's PID 1.
    pid1: Option<Pid>,
    pid_ns: u64,
    /// PID 1 is the built-in init (not the caller's program).
    reaper: bool,
    /// Write end of the life pipe: closing it kills the box.
    life: Option<OwnedFd>,
    /// Write end of box-init's control pipe until PID 1 is released.
    ctl: Option<OwnedFd>,
    command_timeout: Duration,
    torn_down: bool,
    /// The image tree the box runs on, if any (see [`Builder::rootfs`]), and its overlay root.
    rootfs: Option<PathBuf>,
    layer: Option<Layer>,
    /// A pod sandbox's `/dev/shm` (see `container`).
    shm: Option<PathBuf>,
    /// The hostname inside: the box's name, or a container's.
    hostname: String,
    /// The state directory is this box's (removed on teardown), not a container's.
    owns_state: bool,
    /// Released last, after everything under the slot's name is gone; a container's start holds
    /// none (the container does).
    _slot: Option<Lock>,
}

impl TestBox {
    /// A box with default options.
    pub fn new(kind: BoxKind) -> Result<TestBox, Error> {
        Self::builder(kind).start()
    }

    pub fn builder(kind: BoxKind) -> Builder {
        Builder {
            kind,
            exe: None,
            sysrunner: None,
            state_root: STATE_ROOT.into(),
            runner_dir: RUNNER_DIR.into(),
            extra: Vec::new(),
            cgroup_parent: CgroupParent::default(),
            cgroup_layout: None,
            pid1: None,
            before_start: None,
            start_timeout: Duration::from_secs(60),
            command_timeout: Duration::from_secs(180),
            rootfs: None,
            start: StartOptions::default(),
        }
    }

    pub fn kind(&self) -> BoxKind {
        self.kind
    }

    /// `sysrunner-box-<slot>`: the cgroup directories' name, and the hostname inside unless the
    /// box is a container's start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The hostname inside.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Host pid of the box's PID 1 (its namespaces are at `/proc/<pid>/ns/`).
    pub fn pid(&self) -> Pid {
        self.pid1.expect("a started box has a PID 1")
    }

    /// The uid and gid map inside the box.
    pub fn id_map(&self) -> IdMap {
        match self.kind {
            BoxKind::SysboxLike => IdMap {
                inside: 0,
                outside: self.uid,
                count: UID_SPAN,
            },
            BoxKind::PrivilegedLike => IdMap {
                inside: 0,
                outside: 0,
                count: u32::MAX,
            },
        }
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The runner directory's path inside the box.
    pub fn runner_dir(&self) -> &Path {
        &self.runner_dir
    }

    /// The box's cgroup directories on the host.
    pub fn cgroup_dirs(&self) -> &[PathBuf] {
        &self.plan.dirs
    }

    /// What the box lacks that a container would have (e.g. cgroup controllers its v2 parent
    /// keeps to itself): worth printing when a test fails.
    pub fn warnings(&self) -> &[String] {
        &self.plan.notes
    }

    /// The `sysrunner` binary given to [`Builder::sysrunner`], as the box's root can run it (a
    /// copy in the box's state directory). Panics for a box built without one.
    pub fn sysrunner_in_box(&self) -> PathBuf {
        assert!(
            self.sysrunner.is_some(),
            "this box holds no sysrunner: give it one with Builder::sysrunner"
        );
        self.paths.state.join("bin/sysrunner")
    }

    /// A command that runs `program` inside the box as its root, with `HOME=/home/runner`; add
    /// arguments, environment and stdio as usual. The child std sees is `box-exec`, which
    /// forwards signals to the command and exits as it exits; `Child::kill` kills both.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let spec = ExecSpec {
            pid: self.pid().as_raw(),
            pid_ns: self.pid_ns,
            userns: self.kind == BoxKind::SysboxLike,
            cgroup_procs: self.plan.exec_join.clone(),
        };
        let mut c = Command::new(&self.exe);
        c.arg(cli::EXEC)
            .arg(serde_json::to_string(&spec).expect("plain data serialises"))
            .arg("--")
            .arg(program)
            .env("HOME", HOME);
        c
    }

    /// Runs `cmd` with stdout and stderr captured and stdin empty, killing it after the box's
    /// command timeout.
    pub fn output(&self, cmd: &mut Command) -> Result<Output, Error> {
        output_within(cmd, self.command_timeout)
    }

    /// Runs `sh -c script` in the box; its stdout when it exits 0, else an error with both outputs.
    pub fn run_shell(&self, script: &str) -> Result<String, Error> {
        let out = self.output(self.command("/bin/sh").arg("-c").arg(script))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Command {
                what: format!("in box {}: sh -c {script:?}", self.name),
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }

    /// The host path through which `path` inside the box is reached (`/proc/<pid>/root/...`),
    /// also for the box's tmpfs paths such as `/etc/docker` and `/run`.
    pub fn in_box(&self, path: impl AsRef<Path>) -> PathBuf {
        let rel = path.as_ref().strip_prefix("/").unwrap_or(path.as_ref());
        PathBuf::from(format!("/proc/{}/root", self.pid())).join(rel)
    }

    /// Writes a file inside the box, as the box's root (through `sh -c 'cat > path'` in the box:
    /// the host's root cannot create files on the box's tmpfs mounts, whose owner namespace does
    /// not map host uid 0, EOVERFLOW).
    pub fn write_file(
        &self,
        path: impl AsRef<Path>,
        contents: impl AsRef<[u8]>,
    ) -> Result<(), Error> {
        let path = path.as_ref();
        let what = format!("write {} in box {}", path.display(), self.name);
        let mut child = self
            .command("/bin/sh")
            .args(["-c", "cat > \"$1\"", "sh"])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err(what.clone()))?;
        let mut stdin = child.stdin.take().expect("piped");
        let written = stdin.write_all(contents.as_ref());
        drop(stdin);
        let status = wait_within(&mut child, self.command_timeout).map_err(io_err(what.clone()))?;
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        match status {
            Some(s) if s.success() => written.map_err(io_err(what)),
            Some(s) => Err(Error::Command {
                what,
                status: s,
                stdout: String::new(),
                stderr,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(Error::Timeout {
                    what,
                    after: self.command_timeout,
                })
            }
        }
    }

    /// Host pids of the processes in the box's cgroups, without the box's own machinery (its
    /// supervisor, and its PID 1 when that is the built-in init). Empty once everything a test
    /// started in the box has ended.
    pub fn pids(&self) -> Result<Vec<i32>, Error> {
        let mut ours = vec![];
        if let Some(o) = &self.outer {
            ours.push(o.id() as i32);
        }
        if let (true, Some(p)) = (self.reaper, self.pid1) {
            ours.push(p.as_raw());
        }
        let mut all = Vec::new();
        for d in &self.plan.dirs {
            all.extend(cgroup::pids_below(d).map_err(io_err(format!("read {}", d.display())))?);
        }
        all.sort_unstable();
        all.dedup();
        all.retain(|p| !ours.contains(p));
        Ok(all)
    }

    /// Waits up to `timeout` for the box's PID 1 to exit; its exit status (128+signal when
    /// killed), or `None` if it still runs.
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, Error> {
        match self.outer.as_mut() {
            Some(c) => wait_within(c, timeout).map_err(io_err("wait for the box")),
            None => Err(Error::Invalid("the box was torn down".into())),
        }
    }

    /// Tears the box down and says what could not be removed: kills PID 1 (and with it the box's
    /// pid namespace), kills anything left in its cgroups, removes the cgroup directories and
    /// the state directory, releases the slot.
    pub fn stop(mut self) -> Result<(), Error> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), Error> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        self.ctl = None;
        self.life = None;
        if let Some(mut c) = self.outer.take() {
            if !matches!(wait_within(&mut c, Duration::from_secs(20)), Ok(Some(_))) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let r = self.remove_everything();
        self._slot = None;
        r
    }

    fn remove_everything(&self) -> Result<(), Error> {
        let mut problems = Vec::new();
        if let Err(e) = cgroup::remove(&self.plan.dirs, Duration::from_secs(30)) {
            problems.push(e.to_string());
        }
        if self.owns_state {
            match std::fs::remove_dir_all(&self.paths.state) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    problems.push(format!("remove {}: {e}", self.paths.state.display()))
                }
                _ => {}
            }
        }
        // The shared state root stays, empty, after its last box: removing it raced with
        // another box creating its directory there (CI saw "statfs …: No such file").
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Teardown(problems.join("; ")))
        }
    }

    fn make_state_dirs(&self) -> Result<(), Error> {
        let p = &self.paths;
        let root = p
            .state
            .parent()
            .expect("the state dir is below the state root");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(root)
            .map_err(io_err(format!("create {}", root.display())))?;
        mkdir(&p.state, 0o755, 0, 0)?;
        check_not_overlayfs(&p.state, root)?;
        // The sysrunner the box's root runs: a copy beside the box's other directories, because
        // the caller's path (a checkout in a 0700 temporary directory, say) may not be
        // traversable by a mapped root.
        if let Some(sysrunner) = &self.sysrunner {
            let copy = self.sysrunner_in_box();
            std::fs::create_dir_all(copy.parent().expect("in the state dir"))
                .map_err(io_err("create the box's bin"))?;
            std::fs::copy(sysrunner, &copy).map_err(io_err(format!(
                "copy {} into the box's state",
                sysrunner.display()
            )))?;
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
                .map_err(io_err("chmod the box's sysrunner"))?;
        }
        for (dir, mode) in [
            (&p.var_lib_docker, 0o711),
            (&p.tmp, 0o1777),
            (&p.runner, 0o755),
            (&p.home, 0o755),
            (&p.scratch, 0o700),
        ] {
            mkdir(dir, mode, self.uid, self.gid)?;
        }
        Ok(())
    }

    fn mount_plan(&self) -> Result<Vec<MountStep>, Error> {
        let p = &self.paths;
        let bind = |d: &PathBuf| Private::Bind { source: d.clone() };
        if let (Some(tree), Some(layer)) = (&self.rootfs, &self.layer) {
            let private =
                self.with_extra(vec![("/var/lib/docker".into(), bind(&p.var_lib_docker))]);
            let file_sources: Vec<PathBuf> = private
                .iter()
                .filter_map(|(_, what)| match what {
                    Private::Bind { source } if source.is_file() => Some(source.clone()),
                    _ => None,
                })
                .collect();
            // cgroup v1 hosts link co-mounted controllers (cpu -> cpu,cpuacct): the same here.
            let cgroup_links: Vec<(PathBuf, PathBuf)> = std::fs::read_dir("/sys/fs/cgroup")
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| Some((e.path(), std::fs::read_link(e.path()).ok()?)))
                        .collect()
                })
                .unwrap_or_default();
            return mounts::rootfs_plan(&mounts::RootfsInputs {
                root: mounts::RootLayer {
                    lower: tree,
                    upper: &layer.upper,
                    work: &layer.work,
                    merged: &layer.merged,
                    userxattr: self.kind == BoxKind::SysboxLike,
                },
                private: &private,
                file_sources: &file_sources,
                cgroup_binds: &self.plan.binds,
                cgroup_links: &cgroup_links,
                devices: &["null", "zero", "full", "random", "urandom", "tty"],
                shm: match &self.shm {
                    Some(pod) => mounts::Shm::Sandbox(pod.clone()),
                    None => mounts::Shm::Fresh(TmpfsOptions::docker_shm()),
                },
            });
        }
        let harness = || Private::Tmpfs(TmpfsOptions::harness(0o755));
        let private = self.with_extra(vec![
            ("/var/lib/docker".into(), bind(&p.var_lib_docker)),
            // Host-owned files there would be unreadable to a mapped root.
            ("/etc/docker".into(), harness()),
            ("/run".into(), harness()),
            ("/tmp".into(), bind(&p.tmp)),
            (self.runner_dir.clone(), bind(&p.runner)),
            (HOME.into(), bind(&p.home)),
        ]);
        mounts::plan(
            &mounts::Inputs {
                scratch: &p.scratch,
                userxattr: self.kind == BoxKind::SysboxLike,
                private: &private,
                cgroup_binds: &self.plan.binds,
            },
            &|q| q.exists(),
        )
    }

    /// The box's own private paths, then the builder's: a builder path replaces the box's own
    /// mount on the same path (a Docker tmpfs on `/tmp` instead of the box's disk directory).
    fn with_extra(&self, own: Vec<(PathBuf, Private)>) -> Vec<(PathBuf, Private)> {
        let mut all: Vec<(PathBuf, Private)> = own
            .into_iter()
            .filter(|(path, _)| !self.extra.iter().any(|(e, _)| e == path))
            .collect();
        all.extend(self.extra.iter().cloned());
        all
    }

    fn spawn(
        &mut self,
        mounts: Vec<MountStep>,
        pid1: Pid1,
        timeout: Duration,
    ) -> Result<(), Error> {
        let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(nix_err("pipe"));
        let (ctl_r, ctl_w) = pipe()?;
        let (status_r, status_w) = pipe()?;
        let (life_r, life_w) = pipe()?;
        let fresh_userns = self.kind == BoxKind::SysboxLike && pid1.pod.is_none();
        let spec = InitSpec {
            kind: self.kind,
            hostname: self.hostname.clone(),
            ctl_fd: ctl_r.as_raw_fd(),
            status_fd: status_w.as_raw_fd(),
            life_fd: life_r.as_raw_fd(),
            join_after_unshare: self.plan.join_after_unshare.clone(),
            mounts,
            pid1: pid1.argv,
            env: pid1.env,
            cwd: pid1.cwd,
            pod: pid1.pod,
            sandbox: None,
        };
        let inherit = [spec.ctl_fd, spec.status_fd, spec.life_fd];
        let mut cmd = Command::new(&self.exe);
        cmd.arg(cli::INIT)
            .arg(serde_json::to_string(&spec).expect("plain data serialises"))
            .stdin(Stdio::null())
            // Not in the test's process group: a terminal's ^C reaches the test, whose exit
            // closes the life pipe, which tears the box down in order.
            .process_group(0);
        if spec.env.is_some() {
            // A container's PID 1 gets its own environment, and nothing of the test's.
            cmd.env_clear();
        }
        if let Some(log) = &pid1.log {
            let out = std::fs::File::create(log).map_err(io_err(format!(
                "create the container's log {}",
                log.display()
            )))?;
            let err = out.try_clone().map_err(io_err("dup the log"))?;
            cmd.stdout(out).stderr(err);
        }
        // SAFETY: the closure only calls fcntl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                for fd in inherit {
                    sys::set_cloexec(fd, false)?;
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(io_err(format!(
            "spawn {} {}",
            self.exe.display(),
            cli::INIT
        )))?;
        let outer = child.id() as i32;
        self.outer = Some(child);
        self.life = Some(life_w);
        drop((ctl_r, status_w, life_r));

        let deadline = Instant::now() + timeout;
        let mut status = StatusReader::new(status_r, timeout);
        match status.next(deadline)? {
            Status::Unshared => {}
            other => return Err(Error::Setup(format!("expected unshared, got {other:?}"))),
        }
        if fresh_userns {
            write_id_maps(outer, self.uid)?;
        }
        cgroup::join(&HostFs, &self.plan.join, outer)?;
        sys::write_all(ctl_w.as_fd(), &[spec::GO]).map_err(io_err("signal box-init"))?;
        self.ctl = Some(ctl_w);

        let (mut pid1, mut ready) = (None, false);
        while pid1.is_none() || !ready {
            match status.next(deadline)? {
                Status::Pid1(p) => pid1 = Some(Pid::from_raw(p)),
                Status::Ready => ready = true,
                other => return Err(Error::Setup(format!("unexpected status {other:?}"))),
            }
        }
        let pid1 = pid1.expect("loop ends with a pid");
        self.pid1 = Some(pid1);
        let ns = format!("/proc/{pid1}/ns/pid");
        self.pid_ns = std::fs::metadata(&ns)
            .map_err(io_err(format!("stat {ns}")))?
            .ino();
        Ok(())
    }

    /// Lets PID 1 exec the box's program (or become the built-in init): the box is complete.
    fn release(&mut self) -> Result<(), Error> {
        let ctl = self
            .ctl
            .take()
            .ok_or_else(|| Error::Invalid("PID 1 was already released".into()))?;
        sys::write_all(ctl.as_fd(), &[spec::EXEC]).map_err(io_err("start the box's PID 1"))
    }
}

/// Writes a sysbox-like box's uid and gid maps into host process `pid`'s fresh user namespace
/// (root may write another process's maps: no newuidmap, no /etc/subuid).
fn write_id_maps(pid: i32, uid: u32) -> Result<(), Error> {
    let map = format!("0 {uid} {UID_SPAN}\n");
    for f in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{f}");
        std::fs::write(&path, &map).map_err(io_err(format!("write {path}")))?;
    }
    Ok(())
}

impl Drop for TestBox {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("testkit: box {}: {e}", self.name);
        }
    }
}

impl std::fmt::Debug for TestBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBox")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("pid1", &self.pid1)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

/// Reads `box-init`'s status lines with a deadline.
struct StatusReader {
    fd: OwnedFd,
    buf: Vec<u8>,
    timeout: Duration,
}

impl StatusReader {
    fn new(fd: OwnedFd, timeout: Duration) -> Self {
        StatusReader {
            fd,
            buf: Vec::new(),
            timeout,
        }
    }

    /// The next status; an error on failure reports, end of file or the deadline.
    fn next(&mut self, deadline: Instant) -> Result<Status, Error> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line[..i]).into_owned();
                return match Status::parse(&line) {
                    Some(Status::Failed(m)) => Err(Error::Setup(m)),
                    Some(s) => Ok(s),
                    None => Err(Error::Setup(format!("box-init said {line:?}"))),
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: "box start".into(),
                    after: self.timeout,
                });
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(nix_err("poll box-init status")(e)),
                Ok(_) => {}
            }
            let mut chunk = [0u8; 512];
            match nix::unistd::read(self.fd.as_fd(), &mut chunk) {
                Ok(0) => {
                    return Err(Error::Setup(
                        "box-init exited without reporting (see its stderr above)".into(),
                    ));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(nix_err("read box-init status")(e)),
            }
        }
    }
}

fn mkdir(dir: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), Error> {
    let what = format!("create {}", dir.display());
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(dir)
        .map_err(io_err(what.clone()))?;
    // The umask may have narrowed the mode (1777 for tmp).
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(io_err(what.clone()))?;
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).map_err(io_err(what))
}

fn check_not_overlayfs(dir: &Path, root: &Path) -> Result<(), Error> {
    let fs = nix::sys::statfs::statfs(dir).map_err(nix_err(format!("statfs {}", dir.display())))?;
    if fs.filesystem_type().0 as i64 == OVERLAYFS_MAGIC {
        return Err(Error::Invalid(format!(
            "{} is on overlayfs, where dockerd's overlay2 cannot keep /var/lib/docker; choose another state root",
            root.display()
        )));
    }
    Ok(())
}

fn acquire_slot() -> Result<(u32, Lock), Error> {
    for n in 0..SLOTS {
        let l = lock::try_lock(&format!("box-slot-{n}")).map_err(io_err("take a box slot"))?;
        if let Some(l) = l {
            return Ok((n, l));
        }
    }
    Err(Error::NoSlot(SLOTS))
}

/// Waits for `child` up to `timeout`, polling every 5 ms. `None` if it still runs.
pub fn wait_within(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `cmd.output()` with stdin empty and a deadline: on timeout the child is killed. Output still
/// held open at the deadline by something the command left running counts as a timeout too.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Result<Output, Error> {
    let what = describe(cmd);
    let deadline = Instant::now() + timeout;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(format!("spawn {what}")))?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            let _ = tx.send(v);
        });
        rx
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let timed_out = || Error::Timeout {
        what: what.clone(),
        after: timeout,
    };
    let status = wait_within(&mut child, timeout).map_err(io_err(format!("wait for {what}")))?;
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(timed_out());
    };
    let left = || deadline.saturating_duration_since(Instant::now());
    let stdout = out.recv_timeout(left()).map_err(|_| timed_out())?;
    let stderr = err.recv_timeout(left()).map_err(|_| timed_out())?;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// What a command runs, for messages: the part after `box-exec <spec> --` for box commands
/// (the spec is noise there), the whole command line otherwise.
fn describe(cmd: &Command) -> String {
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match args.iter().position(|a| a == "--") {
        Some(i) if args.first().map(String::as_str) == Some(cli::EXEC) => {
            format!("in a box: {}", args[i + 1..].join(" "))
        }
        _ => format!("{} {}", cmd.get_program().to_string_lossy(), args.join(" ")),
    }
}

/// Sends `sig` to a host pid; used to stop what a test started in a box.
pub fn signal(pid: u32, sig: Signal) -> Result<(), Error> {
    kill(Pid::from_raw(pid as i32), sig).map_err(nix_err(format!("kill -{sig} {pid}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_commands_are_described_by_what_runs_in_the_box() {
        let mut c = Command::new("/x/sysrunner-testkit");
        c.args([cli::EXEC, "{\"pid\":1}", "--", "sh", "-c", "true"]);
        assert_eq!(describe(&c), "in a box: sh -c true");
        let mut c = Command::new("ls");
        c.arg("-l");
        assert_eq!(describe(&c), "ls -l");
    }
}
