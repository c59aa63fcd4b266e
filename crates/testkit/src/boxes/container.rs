//! Containers made of an image, kept the way Docker (and sysbox under it) keeps one across
//! `restart: always`, or the way a Kubernetes pod restarts one. A [`Container`] owns what outlives
//! a start: its id and hostname, its writable layer (the overlay's upper and work directories on
//! the host's disk), its `/var/lib/docker` volume directory (sysbox's host-backed one, the
//! privileged image's volume, a pod's emptyDir), the files Docker writes for it (`hostname`,
//! `hosts`, `resolv.conf`, bound over the image's), its box slot and its network. Each start is a
//! [`TestBox`] of its own on the image's tree: fresh mount, pid, cgroup (and, per
//! [`RestartMode`], network, IPC, UTS and user) namespaces, fresh cgroups, a fresh overlay mount
//! over the same upper layer, fresh tmpfs mounts (compose's `tmpfs:`, Docker's `/dev/shm` and
//! `/dev/mqueue`), the entrypoint as PID 1 with exactly the container's environment, and its exit
//! status as the start's, as `docker start -a` shows it. Leaves the box mechanics to the rest of
//! `boxes`, the resolver to [`crate::dns`].
//!
//! Everything goes when the container is dropped (or [`Container::remove`]d), also when a test
//! panics; a container whose test process was SIGKILLed leaves its state under its slot's name,
//! which the next container or box in that slot removes first, and its namespaces, which the
//! kernel frees when the life pipe of its last box-init closes.
//!
//! Not imitated: sysbox's sync-out of `/var/lib/docker` into the container's layer at each stop,
//! a new IP address per Docker start, the pause process's own PID namespace.

use super::error::{Error, io_err};
use super::network::{Attached, Network};
use super::spec::{self, InitSpec, PodJoin, SandboxSpec, Status};
use super::tmpfs::{self, TmpfsOptions};
use super::{
    BoxKind, Layer, STATE_ROOT, StartOptions, StatusReader, TestBox, acquire_slot,
    check_not_overlayfs, cli, files, mkdir, slot_ids, slot_name, sys, wait_within, write_id_maps,
};
use crate::image::ImageConfig;
use crate::lock::Lock;
use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, pipe2};
use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// What a container keeps when it starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    /// `restart: always` under Docker or sysbox: the same container starts again. Every start
    /// gets new namespaces, all of them (a new network namespace, attached to the network
    /// again); the writable layer and the volume are kept; dockerd writes the hostname, hosts and
    /// resolv.conf files anew (moby `initializeNetworking`, a new libnetwork sandbox).
    Docker,
    /// A container restarted inside a Kubernetes pod: the pod sandbox (the pause process) holds
    /// the network, IPC and UTS namespaces, and under sysbox the user namespace they belong to;
    /// containerd binds the sandbox's `/dev/shm`, hosts, hostname and resolv.conf into every
    /// container; volumes (emptyDir) live as long as the pod. All of that is kept, and so is the
    /// writable layer, as in [`RestartMode::Docker`]. (A real kubelet makes a new container with
    /// a clean layer, "kubelet restarts the container with a clean state", Kubernetes docs,
    /// Volumes; keeping it here is the harder case for whatever runs inside: a life must not
    /// depend on a clean layer in either mode, and a test of what a life leaves behind sees the
    /// layer and the pod's namespaces together.)
    Pod,
}

/// Options for a container; [`ContainerBuilder::create`] makes it (`docker create`).
pub struct ContainerBuilder {
    kind: BoxKind,
    tree: PathBuf,
    /// `None`: the kit's own reaping init.
    argv: Option<Vec<String>>,
    env: Vec<String>,
    cwd: Option<PathBuf>,
    mode: RestartMode,
    tmpfs: Vec<String>,
    hostname: Option<String>,
    peer_names: Option<Vec<String>>,
    exe: Option<PathBuf>,
    state_root: PathBuf,
    start_timeout: Duration,
    command_timeout: Duration,
}

impl ContainerBuilder {
    /// The image's `ENTRYPOINT` + `CMD` as PID 1, its `Env` and its `WorkingDir`.
    pub fn image(mut self, c: &ImageConfig) -> Self {
        self.argv = Some(c.argv());
        for kv in &c.env {
            self.env = merge_env(std::mem::take(&mut self.env), kv);
        }
        self.cwd = (!c.working_dir.is_empty()).then(|| c.working_dir.clone().into());
        self
    }

    /// `docker run --entrypoint`: PID 1 runs `argv` instead of the image's.
    pub fn entrypoint<S: Into<String>>(mut self, argv: impl IntoIterator<Item = S>) -> Self {
        self.argv = Some(argv.into_iter().map(Into::into).collect());
        self
    }

    /// PID 1 is the kit's own init, which only reaps and stops on SIGTERM: for a container a test
    /// only enters with [`Container::command`].
    pub fn idle(mut self) -> Self {
        self.argv = None;
        self
    }

    /// `docker run -e KEY=VALUE`: after the image's, replacing a variable of the same name.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env = merge_env(std::mem::take(&mut self.env), &format!("{key}={value}"));
        self
    }

    pub fn restart_mode(mut self, mode: RestartMode) -> Self {
        self.mode = mode;
        self
    }

    /// A compose file's `tmpfs:` entry (`/tmp:exec,size=2g`), mounted fresh at every start as
    /// [`super::Builder::tmpfs_docker`] mounts it. Refused now when Docker would refuse it.
    pub fn tmpfs_docker(mut self, spec: &str) -> Result<Self, Error> {
        tmpfs::parse_docker(spec).map_err(Error::Invalid)?;
        self.tmpfs.push(spec.to_owned());
        Ok(self)
    }

    /// `docker run --hostname`; by default the id's first 12 hex digits, as Docker names it.
    pub fn hostname(mut self, name: &str) -> Self {
        self.hostname = Some(name.to_owned());
        self
    }

    /// Attaches every network namespace of the container to a network of its own (see
    /// [`Network`]) whose peer the container's resolver knows by `peer_names`. Without it the
    /// container has only `lo`, and nothing answers at 127.0.0.11.
    pub fn network(mut self, peer_names: &[&str]) -> Self {
        self.peer_names = Some(peer_names.iter().map(|s| s.to_string()).collect());
        self
    }

    /// The `sysrunner-testkit` binary, as for [`super::Builder::exe`].
    pub fn exe(mut self, path: impl Into<PathBuf>) -> Self {
        self.exe = Some(path.into());
        self
    }

    /// Where the container's directories go (default [`STATE_ROOT`]). Must not be on overlayfs.
    pub fn state_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_root = dir.into();
        self
    }

    pub fn start_timeout(mut self, t: Duration) -> Self {
        self.start_timeout = t;
        self
    }

    pub fn command_timeout(mut self, t: Duration) -> Self {
        self.command_timeout = t;
        self
    }

    /// Creates the container, not started: its slot, directories, network and (in Pod mode) its
    /// pod sandbox. On any error, whatever was already created is removed again.
    pub fn create(self) -> Result<Container, Error> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::Invalid("containers need root".into()));
        }
        let exe = match self.exe {
            Some(e) => e,
            None => crate::binaries::locate_testkit().map_err(Error::Invalid)?,
        };
        let (slot, lock) = acquire_slot()?;
        let name = slot_name(slot);
        let (uid, gid) = slot_ids(self.kind, slot);
        let state = self.state_root.join(&name);
        let id = files::container_id();
        let hostname = self
            .hostname
            .unwrap_or_else(|| files::default_hostname(&id));
        // dockerd adds PATH when the image has none, and HOSTNAME; runc adds HOME when the
        // environment has none (root's, from the image's passwd).
        let mut env = self.env;
        for (k, v, always) in [
            ("PATH", super::DEFAULT_PATH, false),
            ("HOSTNAME", hostname.as_str(), true),
            ("HOME", "/root", false),
        ] {
            if always || !env.iter().any(|kv| kv.starts_with(&format!("{k}="))) {
                env = merge_env(env, &format!("{k}={v}"));
            }
        }
        let mut c = Container {
            kind: self.kind,
            mode: self.mode,
            id,
            hostname,
            name,
            slot,
            uid,
            gid,
            layer: Layer::under(&state),
            volume: state.join("var-lib-docker"),
            files: state.join("files"),
            pod_shm: state.join("pod-shm"),
            state,
            tree: self.tree,
            argv: self.argv,
            env,
            cwd: self.cwd,
            tmpfs: self.tmpfs,
            exe,
            state_root: self.state_root,
            start_timeout: self.start_timeout,
            command_timeout: self.command_timeout,
            current: None,
            attached: None,
            sandbox: None,
            network: None,
            starts: 0,
            removed: false,
            _slot: Some(lock),
        };
        c.make_dirs()?;
        if let Some(names) = &self.peer_names {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let slot = u8::try_from(c.slot).expect("fewer than 256 slots");
            c.network = Some(Network::create(slot, &names)?);
        }
        if c.mode == RestartMode::Pod {
            let sb = Sandbox::start(&c)?;
            let pid = sb.pid;
            c.sandbox = Some(sb);
            if let Some(net) = &c.network {
                c.attached = Some(net.attach(pid, &c.hostname)?);
            }
            // The sandbox's files, written once: a job's edits to them stay, as in a pod.
            c.write_files()?;
        }
        Ok(c)
    }
}

/// `KEY=value` replacing an earlier `KEY=…` in place, or appended.
fn merge_env(mut env: Vec<String>, kv: &str) -> Vec<String> {
    let key = kv.split_once('=').map_or(kv, |(k, _)| k);
    match env
        .iter()
        .position(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
    {
        Some(i) => env[i] = kv.to_owned(),
        None => env.push(kv.to_owned()),
    }
    env
}

/// A container and whatever start it is in. Dropping it removes it (`docker rm -f`).
pub struct Container {
    kind: BoxKind,
    mode: RestartMode,
    id: String,
    hostname: String,
    /// The slot's name: `sysrunner-box-<slot>`, also every start's cgroup directories' name.
    name: String,
    slot: u32,
    uid: u32,
    gid: u32,
    state: PathBuf,
    layer: Layer,
    volume: PathBuf,
    files: PathBuf,
    pod_shm: PathBuf,
    tree: PathBuf,
    argv: Option<Vec<String>>,
    env: Vec<String>,
    cwd: Option<PathBuf>,
    tmpfs: Vec<String>,
    exe: PathBuf,
    state_root: PathBuf,
    start_timeout: Duration,
    command_timeout: Duration,
    /// The running start, or the last one (stopped) until the next start or removal.
    current: Option<TestBox>,
    /// The network namespace that is attached: the current start's (Docker), the pod's (Pod).
    attached: Option<Attached>,
    sandbox: Option<Sandbox>,
    network: Option<Network>,
    starts: u32,
    removed: bool,
    /// Released last, after everything under the slot's name is gone.
    _slot: Option<Lock>,
}

impl Container {
    /// A container of `kind` on `tree`, an unpacked image (see [`crate::image::unpack`]); its
    /// owners are shifted into the container's id range when it is created.
    pub fn builder(kind: BoxKind, tree: impl Into<PathBuf>) -> ContainerBuilder {
        ContainerBuilder {
            kind,
            tree: tree.into(),
            argv: None,
            env: Vec::new(),
            cwd: None,
            mode: RestartMode::Docker,
            tmpfs: Vec::new(),
            hostname: None,
            peer_names: None,
            exe: None,
            state_root: STATE_ROOT.into(),
            start_timeout: Duration::from_secs(60),
            command_timeout: Duration::from_secs(180),
        }
    }

    /// 64 hex digits.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    pub fn kind(&self) -> BoxKind {
        self.kind
    }

    pub fn mode(&self) -> RestartMode {
        self.mode
    }

    /// How many times it has started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// PID 1's environment (`KEY=value`): the image's, the builder's, HOSTNAME and HOME.
    pub fn env(&self) -> &[String] {
        &self.env
    }

    /// The host directory that is the container's writable layer (the overlay's upper).
    pub fn upper(&self) -> &Path {
        &self.layer.upper
    }

    /// The host directory bound on `/var/lib/docker`.
    pub fn volume(&self) -> &Path {
        &self.volume
    }

    pub fn network(&self) -> Option<&Network> {
        self.network.as_ref()
    }

    /// The container's address on its network, if it has one.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.network.as_ref().map(|n| n.box_ip)
    }

    /// The current start (running or ended), for its pid, cgroups and `/proc/<pid>/root`.
    pub fn current(&self) -> Option<&TestBox> {
        self.current.as_ref()
    }

    fn running(&self) -> Result<&TestBox, Error> {
        self.current
            .as_ref()
            .ok_or_else(|| Error::Invalid(format!("container {} never started", self.hostname)))
    }

    /// `docker start`: a new start of the container, its PID 1's stdout and stderr in `log`.
    /// The last start must have ended ([`Container::wait`], [`Container::stop`]).
    pub fn start(&mut self, log: &Path) -> Result<(), Error> {
        if let Some(b) = self.current.as_mut() {
            if b.wait(Duration::ZERO)?.is_none() {
                return Err(Error::Invalid(format!(
                    "container {} is still running",
                    self.hostname
                )));
            }
        }
        self.end_start();
        if self.mode == RestartMode::Docker {
            self.write_files()?;
        }
        let mut builder = TestBox::builder(self.kind)
            .exe(&self.exe)
            .state_root(&self.state_root)
            .rootfs(&self.tree)
            .start_timeout(self.start_timeout)
            .command_timeout(self.command_timeout);
        for spec in &self.tmpfs {
            builder = builder.tmpfs_docker(spec)?;
        }
        for f in ["hostname", "hosts", "resolv.conf"] {
            builder = builder.bind(self.files.join(f), Path::new("/etc").join(f));
        }
        builder.pid1 = self.argv.clone();
        builder.start = StartOptions {
            layer: Some(self.layer.clone()),
            hostname: Some(self.hostname.clone()),
            env: Some(self.env.clone()),
            cwd: self.cwd.clone(),
            log: Some(log.to_owned()),
            pod: self.sandbox.as_ref().map(|s| s.join.clone()),
            shm: self.sandbox.as_ref().map(|_| self.pod_shm.clone()),
        };
        let mut b = builder.launch(self.slot, None, false)?;
        if self.mode == RestartMode::Docker {
            if let Some(net) = &self.network {
                self.attached = Some(net.attach(b.pid().as_raw(), &self.hostname)?);
            }
        }
        b.release()?;
        self.current = Some(b);
        self.starts += 1;
        Ok(())
    }

    /// Waits up to `timeout` for the current start's PID 1 to exit (`docker wait`): its exit
    /// status (128+signal when killed), or `None` while it runs. In Docker mode the start's
    /// network namespace is let go once it has ended.
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, Error> {
        let name = self.hostname.clone();
        let b = self
            .current
            .as_mut()
            .ok_or_else(|| Error::Invalid(format!("container {name} never started")))?;
        let status = b.wait(timeout)?;
        if status.is_some() && self.mode == RestartMode::Docker {
            self.attached = None;
        }
        Ok(status)
    }

    /// `docker stop -t grace`: SIGTERM to PID 1 (the image's stop signal), SIGKILL after `grace`;
    /// the start's exit status.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus, Error> {
        if let Some(s) = self.wait(Duration::ZERO)? {
            return Ok(s);
        }
        let pid1 = self.running()?.pid();
        // To PID 1 from outside its pid namespace: a signal PID 1 has no handler for is dropped,
        // as in a container.
        let _ = kill(pid1, Signal::SIGTERM);
        if let Some(s) = self.wait(grace)? {
            return Ok(s);
        }
        let _ = kill(pid1, Signal::SIGKILL);
        self.wait(Duration::from_secs(30))?
            .ok_or_else(|| Error::Teardown(format!("{} survived SIGKILL", self.hostname)))
    }

    /// `docker exec`: `program` in the running start, as root, with the container's environment
    /// (not the test's); add arguments and stdio as usual.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Result<Command, Error> {
        let mut c = self.running()?.command(program);
        c.env_clear().envs(
            self.env
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .collect::<Vec<_>>(),
        );
        Ok(c)
    }

    /// Runs `cmd` with the command timeout, as [`TestBox::output`].
    pub fn output(&self, cmd: &mut Command) -> Result<Output, Error> {
        self.running()?.output(cmd)
    }

    /// `sh -c script` in the running start; its stdout when it exits 0, else an error with both
    /// outputs.
    pub fn run_shell(&self, script: &str) -> Result<String, Error> {
        let out = self.output(self.command("/bin/sh")?.arg("-c").arg(script))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Command {
                what: format!("in container {}: sh -c {script:?}", self.hostname),
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }

    /// Host pids of the current start's processes (see [`TestBox::pids`]); empty when it has
    /// none or never started.
    pub fn pids(&self) -> Result<Vec<i32>, Error> {
        match &self.current {
            Some(b) => b.pids(),
            None => Ok(Vec::new()),
        }
    }

    /// `docker rm -f`: ends the current start and removes everything, saying what could not be.
    pub fn remove(mut self) -> Result<(), Error> {
        self.teardown()
    }

    /// The ended start's box goes (its cgroups), and in Docker mode its network attachment.
    fn end_start(&mut self) {
        if self.mode == RestartMode::Docker {
            self.attached = None;
        }
        self.current = None;
    }

    fn teardown(&mut self) -> Result<(), Error> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        let mut problems = Vec::new();
        if let Some(b) = self.current.take() {
            if let Err(e) = b.stop() {
                problems.push(e.to_string());
            }
        }
        self.attached = None;
        self.sandbox = None;
        self.network = None;
        match std::fs::remove_dir_all(&self.state) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                problems.push(format!("remove {}: {e}", self.state.display()))
            }
            _ => {}
        }
        self._slot = None;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Teardown(problems.join("; ")))
        }
    }

    /// The container's directories, owned by its root where the container writes them; the
    /// image's tree shifted into its id range.
    fn make_dirs(&self) -> Result<(), Error> {
        let root = self.state_root.as_path();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(root)
            .map_err(io_err(format!("create {}", root.display())))?;
        // The slot is ours: what is there was left by a process that died uncleaned.
        match std::fs::remove_dir_all(&self.state) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err(format!("remove {}", self.state.display()))(e));
            }
            _ => {}
        }
        mkdir(&self.state, 0o755, 0, 0)?;
        check_not_overlayfs(&self.state, root)?;
        crate::image::shift_tree(&self.tree, self.uid).map_err(io_err(format!(
            "shift the owners of {} to {}",
            self.tree.display(),
            self.uid
        )))?;
        self.layer.make(&self.tree, self.uid, self.gid)?;
        // As sysbox-mgr makes the host directory of /var/lib/docker: 0700, the container root's.
        mkdir(&self.volume, 0o700, self.uid, self.gid)?;
        mkdir(&self.files, 0o755, 0, 0)?;
        if self.mode == RestartMode::Pod {
            mkdir(&self.pod_shm, 0o755, 0, 0)?;
        }
        Ok(())
    }

    /// Docker's three files, in the container's own directory, owned by its root (as sysbox
    /// shows dockerd's files to the container).
    fn write_files(&self) -> Result<(), Error> {
        for (name, contents) in files::all(&self.hostname, self.ip()) {
            let path = self.files.join(name);
            std::fs::write(&path, contents).map_err(io_err(format!("write {}", path.display())))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .map_err(io_err(format!("chmod {}", path.display())))?;
            std::os::unix::fs::lchown(&path, Some(self.uid), Some(self.gid))
                .map_err(io_err(format!("chown {}", path.display())))?;
        }
        Ok(())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("testkit: container {}: {e}", self.hostname);
        }
    }
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("kind", &self.kind)
            .field("mode", &self.mode)
            .field("hostname", &self.hostname)
            .field("name", &self.name)
            .field("starts", &self.starts)
            .finish_non_exhaustive()
    }
}

/// A pod's sandbox: `box-init` as a pause process holding the pod's namespaces and `/dev/shm`
/// (see `init`). It stays in the test's own cgroup, outside every start's, as a pause container
/// sits in the pod's cgroup above its containers'. Killed when dropped, or when the test process
/// dies (the life pipe).
struct Sandbox {
    child: Child,
    life: Option<OwnedFd>,
    pid: i32,
    join: PodJoin,
}

impl Sandbox {
    fn start(c: &Container) -> Result<Sandbox, Error> {
        let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(super::error::nix_err("pipe"));
        let (ctl_r, ctl_w) = pipe()?;
        let (status_r, status_w) = pipe()?;
        let (life_r, life_w) = pipe()?;
        let spec = InitSpec {
            kind: c.kind,
            hostname: c.hostname.clone(),
            ctl_fd: ctl_r.as_raw_fd(),
            status_fd: status_w.as_raw_fd(),
            life_fd: life_r.as_raw_fd(),
            join_after_unshare: Vec::new(),
            mounts: Vec::new(),
            pid1: None,
            env: None,
            cwd: None,
            pod: None,
            sandbox: Some(SandboxSpec {
                shm: c.pod_shm.clone(),
                shm_options: TmpfsOptions::docker_shm(),
            }),
        };
        let inherit = [spec.ctl_fd, spec.status_fd, spec.life_fd];
        let mut cmd = Command::new(&c.exe);
        cmd.arg(cli::INIT)
            .arg(serde_json::to_string(&spec).expect("plain data serialises"))
            .env_clear()
            .stdin(Stdio::null())
            .process_group(0);
        // SAFETY: the closure only calls fcntl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                for fd in inherit {
                    sys::set_cloexec(fd, false)?;
                }
                Ok(())
            });
        }
        let child =
            cmd.spawn()
                .map_err(io_err(format!("spawn {} {}", c.exe.display(), cli::INIT)))?;
        let pid = child.id() as i32;
        let mut sb = Sandbox {
            child,
            life: Some(life_w),
            pid,
            join: PodJoin {
                pid,
                namespaces: Vec::new(),
            },
        };
        drop((ctl_r, status_w, life_r));
        let deadline = Instant::now() + c.start_timeout;
        let mut status = StatusReader::new(status_r, c.start_timeout);
        match status.next(deadline)? {
            Status::Unshared => {}
            other => return Err(Error::Setup(format!("pod sandbox: unexpected {other:?}"))),
        }
        if c.kind == BoxKind::SysboxLike {
            write_id_maps(pid, c.uid)?;
        }
        sys::write_all(ctl_w.as_fd(), &[spec::GO]).map_err(io_err("signal the pod sandbox"))?;
        match status.next(deadline)? {
            Status::Ready => {}
            other => return Err(Error::Setup(format!("pod sandbox: unexpected {other:?}"))),
        }
        let mut names = vec!["net", "ipc", "uts", "mnt"];
        if c.kind == BoxKind::SysboxLike {
            names.insert(0, "user");
        }
        for n in names {
            let path = format!("/proc/{pid}/ns/{n}");
            let ino = std::fs::metadata(&path)
                .map_err(io_err(format!("stat {path}")))?
                .ino();
            sb.join.namespaces.push((n.to_owned(), ino));
        }
        Ok(sb)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.life = None;
        if !matches!(
            wait_within(&mut self.child, Duration::from_secs(10)),
            Ok(Some(_))
        ) {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_variable_replaces_an_earlier_one_of_the_same_name_in_place() {
        let env = ["PATH=/bin", "LANG=C.UTF-8"]
            .iter()
            .fold(Vec::new(), |e, kv| merge_env(e, kv));
        let env = merge_env(env, "PATH=/usr/bin:/bin");
        let env = merge_env(env, "EMPTY=");
        let env = merge_env(env, "A=b=c");
        assert_eq!(
            env,
            ["PATH=/usr/bin:/bin", "LANG=C.UTF-8", "EMPTY=", "A=b=c"]
        );
        assert_eq!(merge_env(env, "A=d")[3], "A=d");
    }

    #[test]
    fn the_builder_takes_the_images_entrypoint_env_and_workdir() {
        let cfg = ImageConfig {
            entrypoint: vec!["sysrunner".into(), "run".into()],
            cmd: vec![],
            env: vec!["PATH=/usr/local/bin:/usr/bin".into(), "LANG=C.UTF-8".into()],
            working_dir: String::new(),
            user: String::new(),
            stop_signal: Some("SIGTERM".into()),
        };
        let b = Container::builder(BoxKind::SysboxLike, "/img")
            .image(&cfg)
            .env("LANG", "C")
            .env("REPO", "o/r");
        assert_eq!(b.argv, Some(vec!["sysrunner".into(), "run".into()]));
        assert_eq!(
            b.env,
            ["PATH=/usr/local/bin:/usr/bin", "LANG=C", "REPO=o/r"]
        );
        assert_eq!(b.cwd, None);
        assert_eq!(b.idle().argv, None);
    }
}
