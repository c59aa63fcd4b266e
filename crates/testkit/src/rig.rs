//! A runner container's stand-ins against the fake GitHub. [`Rig`], for the lifecycle tests, the
//! matrix and the demo: a box set up like the image (the fake actions/runner as the read-only
//! release, a `runner` user in the `docker` group, private /var/lib/sysrunner) that runs sysrunner
//! from the host's root. [`ImageRig`], for the image tests: an image's own [`Container`], whose
//! lives are its starts. Both have the fake GitHub in a network namespace of its own, linked to
//! the box by a veth pair that is the box's only link and default route (MTU 1400 on purpose),
//! Docker's files (`/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`) and Docker's embedded
//! resolver at 127.0.0.11, which knows the fake GitHub as [`GITHUB_NAME`]. Nothing a box sends
//! leaves these namespaces. Owns the network, the fake and (for the image) the container; all go
//! on drop.

use super::boxes::network::{Attached, Network};
use super::fake_github::{
    ALL_GRANTS_PAT, ControlClient, FakeConfig, FakeGitHub, Job, JobSpec, RequestRecord, RunnerState,
};
use super::image::ImageConfig;
use super::{BoxKind, TestBox, binaries, boxes, fake_runner, image};
use boxes::{Container, RestartMode};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use super::boxes::network::{LINK_MTU, Netns};

/// The PAT the rig's runners register with.
pub const TOKEN: &str = ALL_GRANTS_PAT;
/// The name the box's resolver gives the fake GitHub.
pub const GITHUB_NAME: &str = "github.fake";
/// Where [`ImageRig`]'s fake GitHub listens in its own namespace (nothing else listens there), so
/// that its URL by name is known before anything starts: `http://github.fake:8080`.
pub const GITHUB_PORT: u16 = 8080;
/// The PATH a life gets unless its settings say otherwise.
pub const BOX_PATH: &str = boxes::DEFAULT_PATH;

/// The fake GitHub on a runtime in its own network namespace, and a control client for it.
struct Fake {
    ns: Netns,
    fake: Option<FakeGitHub>,
    ctl: ControlClient,
}

impl Fake {
    /// Starts `cfg` in the namespace at `netns`, listening on `listen`; the URL it hands out.
    fn start(netns: &Path, cfg: FakeConfig, listen: SocketAddr) -> Result<(Fake, String), String> {
        let ns = Netns::enter(netns).map_err(|e| format!("enter {}: {e}", netns.display()))?;
        let cfg = FakeConfig { listen, ..cfg };
        let fake = ns.run(FakeGitHub::start(cfg)).map_err(|e| e.to_string())?;
        let url = fake.web_url().to_string();
        // By address: the test's side resolves no name in the fake's namespace.
        let ctl = ControlClient::new(&format!("http://{}", fake.addr()));
        Ok((
            Fake {
                ns,
                fake: Some(fake),
                ctl,
            },
            url,
        ))
    }

    fn call<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
        &self,
        f: impl FnOnce(ControlClient) -> F,
    ) -> T {
        self.ns.run(f(self.ctl.clone()))
    }

    fn queue(&self, runner: &str, name: &str, steps: &[&str]) -> Job {
        let spec = JobSpec {
            runner_name: runner.into(),
            name: name.into(),
            steps: steps.iter().map(|s| s.to_string()).collect(),
            scope: None,
            labels: vec![],
        };
        self.call(|c| async move { c.queue_job(&spec).await })
            .expect("queue a job")
    }

    fn job(&self, id: u64) -> Job {
        self.call(move |c| async move { c.job(id).await })
            .expect("read a job")
    }

    fn runners(&self) -> Vec<RunnerState> {
        self.call(|c| async move { c.runners().await })
            .expect("list runners")
    }

    fn requests(&self) -> Vec<RequestRecord> {
        self.call(|c| async move { c.requests().await })
            .expect("list requests")
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(f) = self.fake.take() {
            self.ns.run(async move { f.stop().await });
        }
    }
}

/// The settings of a repository runner with a PAT, against the fake at `url`.
fn settings_for(url: &str, name: &str) -> BTreeMap<String, String> {
    [
        ("REPO", "octo-org/octo-repo"),
        ("ACCESS_TOKEN", TOKEN),
        ("GITHUB_URL", url),
        ("GITHUB_API_URL", url),
        ("RUNNER_NAME", name),
        ("RUNNER_SUDO", "false"),
        ("STOP_TIMEOUT", "9s"),
        ("API_DEADLINE", "30s"),
        ("API_TIMEOUT", "5s"),
        ("LOG_LEVEL", "info,dockerd=warn"),
        ("NO_COLOR", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Polls `f` every 50 ms until it holds or `limit` passes.
fn poll_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A box's processes once a life has ended: empty as soon as it is, else what is still there
/// after 10 s. What sysrunner SIGKILLed at its end leaves the cgroup only once the kernel has
/// reaped it, which on a loaded machine can come after sysrunner's own exit.
fn pids_after_a_life(pids: impl Fn() -> Result<Vec<i32>, String>) -> Result<Vec<i32>, String> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let p = pids()?;
        if p.is_empty() || Instant::now() >= end {
            return Ok(p);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The box, its network to the fake GitHub, and the fake. Fields drop in this order: the fake
/// and the network (whose namespace is named after the box's slot) go before the box frees that
/// slot.
pub struct Rig {
    fake: Fake,
    /// Held for its drop: the veth pair and the resolver in the box's namespace.
    _attached: Attached,
    net: Network,
    pub b: TestBox,
    pub url: String,
    _files: tempfile::TempDir,
}

/// passwd and group with the runner user (uid 1001) in the docker group, bound over the box's.
fn user_files(dir: &Path) -> std::io::Result<(PathBuf, PathBuf, PathBuf)> {
    let passwd: String = std::fs::read_to_string("/etc/passwd")?
        .lines()
        .filter(|l| !l.starts_with("runner:"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + "runner:x:1001:1001:runner:/home/runner:/bin/sh\n";
    let host_group = std::fs::read_to_string("/etc/group")?;
    let docker_gid = host_group
        .lines()
        .find(|l| l.starts_with("docker:"))
        .and_then(|l| l.split(':').nth(2).map(String::from))
        .unwrap_or_else(|| "998".into());
    let group: String = host_group
        .lines()
        .filter(|l| !l.starts_with("runner:") && !l.starts_with("docker:"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + &format!("runner:x:1001:\ndocker:x:{docker_gid}:runner\n");
    // sudo's PAM account check wants a shadow entry (a password nobody can use).
    let shadow: String = std::fs::read_to_string("/etc/shadow")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("runner:"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + "runner:*:19000:0:99999:7:::\n";
    let (p, g, sh) = (dir.join("passwd"), dir.join("group"), dir.join("shadow"));
    std::fs::write(&p, passwd)?;
    std::fs::write(&g, group)?;
    std::fs::write(&sh, shadow)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o640))?;
    Ok((p, g, sh))
}

fn chown_tree(path: &Path, uid: u32) {
    let _ = nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(uid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    );
    if path.is_dir()
        && !path.is_symlink()
        && let Ok(entries) = std::fs::read_dir(path)
    {
        for e in entries.flatten() {
            chown_tree(&e.path(), uid);
        }
    }
}

impl Rig {
    /// A box of `kind` holding `sysrunner` (a sysrunner binary, at [`TestBox::sysrunner_in_box`])
    /// and the fake runner (its listener built with this kit, see [`binaries`]), and the fake
    /// GitHub (`cfg`, its address replaced by one in its own namespace). The box gets Docker's
    /// files where the host has plain files at those paths, and the resolver at 127.0.0.11.
    pub fn start(kind: BoxKind, cfg: FakeConfig, sysrunner: &Path) -> Result<Rig, String> {
        let listener = binaries::locate_listener()?;
        let files = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (passwd, group, shadow) =
            user_files(files.path()).map_err(|e| format!("user files: {e}"))?;
        let mut builder = TestBox::builder(kind)
            .sysrunner(sysrunner)
            .tmpfs("/var/lib/sysrunner")
            .bind(passwd, "/etc/passwd")
            .bind(group, "/etc/group")
            .bind(shadow, "/etc/shadow");
        if Path::new("/etc/sudoers.d").is_dir() {
            builder = builder.tmpfs("/etc/sudoers.d");
        }
        // Docker's files, filled in once the box has its name and address (the same inodes).
        let mut docker_files = Vec::new();
        for (name, _) in boxes::files::all("", None) {
            let target = Path::new("/etc").join(name);
            // A host whose file is a link (systemd-resolved's resolv.conf) keeps its own.
            if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_file()) {
                let source = files.path().join(name);
                std::fs::write(&source, "").map_err(|e| format!("{name}: {e}"))?;
                builder = builder.bind(&source, target);
                docker_files.push(source);
            }
        }
        let b = builder.start().map_err(|e| format!("{kind:?} box: {e}"))?;
        let release = b.paths().runner.clone();
        fake_runner::install(&release, &listener).map_err(|e| format!("fake runner: {e}"))?;
        image::write_busybox_rootfs(&release.join("busybox.tar"))
            .map_err(|e| format!("busybox image: {e}"))?;
        // The release as an image holds it: owned by the box's root.
        chown_tree(&release, b.id_map().outside);
        let slot: u8 = b
            .name()
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let net = Network::create(slot, &[GITHUB_NAME]).map_err(|e| e.to_string())?;
        for (name, contents) in boxes::files::all(b.hostname(), Some(net.box_ip)) {
            let source = files.path().join(name);
            if docker_files.contains(&source) {
                std::fs::write(&source, contents).map_err(|e| format!("{name}: {e}"))?;
            }
        }
        let attached = net
            .attach(b.pid().as_raw(), b.hostname())
            .map_err(|e| e.to_string())?;
        let (fake, url) = Fake::start(
            &net.peer_path(),
            cfg,
            SocketAddr::new(IpAddr::V4(net.peer_ip), 0),
        )?;
        Ok(Rig {
            fake,
            _attached: attached,
            net,
            b,
            url,
            _files: files,
        })
    }

    pub fn box_ip(&self) -> Ipv4Addr {
        self.net.box_ip
    }

    /// The settings of a repository runner with a PAT, against the fake. `LIFE_SANDBOX=off`: a
    /// plain box's root is the host's, and sysrunner and the runner release are mounts in it,
    /// which a life's overlay of that root would not hold (the image containers sandbox).
    pub fn settings(&self, name: &str) -> BTreeMap<String, String> {
        let mut s = settings_for(&self.url, name);
        s.insert("LIFE_SANDBOX".into(), "off".into());
        s
    }

    /// `program args…` in the box with exactly `env` (and PATH), output to `log`.
    pub fn spawn_in_box(
        &self,
        program: &Path,
        args: &[&str],
        env: &BTreeMap<String, String>,
        log: &Path,
    ) -> std::io::Result<Child> {
        let out = std::fs::File::create(log)?;
        let mut c: Command = self.b.command(program);
        c.env_clear()
            .env("HOME", "/root")
            .env("PATH", BOX_PATH)
            .envs(env)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        c.spawn()
    }

    /// One whole life of `program run` in the box with `env`: spawned, waited for at most
    /// `limit` (killed after), its exit code and its log (written to `log`).
    pub fn life(
        &self,
        program: &Path,
        env: &BTreeMap<String, String>,
        log: &Path,
        limit: Duration,
    ) -> (Option<i32>, String) {
        let mut child = self
            .spawn_in_box(program, &["run"], env, log)
            .expect("spawn a life in the box");
        let status = crate::boxes::wait_within(&mut child, limit).expect("wait for the life");
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        (
            status.and_then(|s| s.code()),
            std::fs::read_to_string(log).unwrap_or_default(),
        )
    }

    pub fn queue(&self, runner: &str, name: &str, steps: &[&str]) -> Job {
        self.fake.queue(runner, name, steps)
    }

    pub fn job(&self, id: u64) -> Job {
        self.fake.job(id)
    }

    pub fn runners(&self) -> Vec<RunnerState> {
        self.fake.runners()
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.fake.requests()
    }

    /// Runs `f` in the fake GitHub's namespace (a controller's own API call, say).
    pub fn in_github_netns<T: Send + 'static>(
        &self,
        f: impl Future<Output = T> + Send + 'static,
    ) -> T {
        self.fake.ns.run(f)
    }

    /// Polls `f` every 50 ms until it holds or `limit` passes.
    pub fn until(&self, limit: Duration, mut f: impl FnMut(&Rig) -> bool) -> bool {
        poll_until(limit, || f(self))
    }

    /// After a life: GitHub lists no runner (it deregistered) and no process is left in the box.
    /// `log` is the life's log, shown when either does not hold.
    pub fn assert_ended_clean(&self, log: &str) {
        let runners = self.runners();
        assert!(runners.is_empty(), "still registered: {runners:?}\n{log}");
        let pids = self.pids_left().expect("list the box's processes");
        assert!(
            pids.is_empty(),
            "processes left 10 s after the end: {pids:?}\n{log}"
        );
    }

    /// The box's processes once a life has ended: empty as soon as it is, else what is still
    /// there after 10 s. What sysrunner SIGKILLed at its end leaves the cgroup only once the
    /// kernel has reaped it, which on a loaded machine can come after sysrunner's own exit.
    pub fn pids_left(&self) -> Result<Vec<i32>, String> {
        pids_after_a_life(|| self.b.pids().map_err(|e| e.to_string()))
    }

    /// The host pid of a process in the box with this command name.
    pub fn box_pid(&self, comm: &str) -> Option<i32> {
        self.b.pids().ok()?.into_iter().find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .map(|c| c.trim() == comm)
                .unwrap_or(false)
        })
    }
}

/// An image's container (`tree`, unpacked) against the fake GitHub, which its resolver knows as
/// [`GITHUB_NAME`]: a life is one start of the container, its entrypoint (`sysrunner run`) PID 1.
/// Fields drop in this order: the fake, then the container (its network, then its slot).
pub struct ImageRig {
    fake: Fake,
    /// The fake's URL by name, as the container reaches it: `http://github.fake:8080`.
    pub url: String,
    pub c: Container,
}

/// What an [`ImageRig`] is made of.
pub struct ImageRigSpec<'a> {
    pub kind: BoxKind,
    pub fake: FakeConfig,
    /// The unpacked image.
    pub tree: &'a Path,
    pub image: &'a ImageConfig,
    /// The compose file's `tmpfs:` entries.
    pub tmpfs: &'a [String],
    pub mode: RestartMode,
    /// The container's environment besides the image's (compose's `environment:`), e.g.
    /// [`ImageRig::settings`].
    pub env: &'a BTreeMap<String, String>,
}

impl ImageRig {
    /// The fake GitHub's URL by name (see [`GITHUB_PORT`]).
    pub fn github_url() -> String {
        format!("http://{GITHUB_NAME}:{GITHUB_PORT}")
    }

    /// The settings of a repository runner with a PAT, against the fake by name.
    /// `LIFE_SANDBOX=required`: an image container is where each life is sandboxed.
    pub fn settings(name: &str) -> BTreeMap<String, String> {
        let mut s = settings_for(&Self::github_url(), name);
        s.insert("LIFE_SANDBOX".into(), "required".into());
        s
    }

    /// Creates the container (not started) and its network, and the fake GitHub in the network's
    /// peer namespace, handing out URLs by name.
    pub fn start(spec: ImageRigSpec<'_>) -> Result<ImageRig, String> {
        let mut b = Container::builder(spec.kind, spec.tree)
            .image(spec.image)
            .restart_mode(spec.mode)
            .network(&[GITHUB_NAME]);
        for t in spec.tmpfs {
            b = b.tmpfs_docker(t).map_err(|e| format!("tmpfs {t}: {e}"))?;
        }
        for (k, v) in spec.env {
            b = b.env(k, v);
        }
        let c = b
            .create()
            .map_err(|e| format!("{:?} container of {}: {e}", spec.kind, spec.tree.display()))?;
        let net = c.network().expect("made with a network");
        let url = Self::github_url();
        let cfg = FakeConfig {
            public_url: url.clone(),
            ..spec.fake
        };
        let (fake, _) = Fake::start(
            &net.peer_path(),
            cfg,
            SocketAddr::new(IpAddr::V4(net.peer_ip), GITHUB_PORT),
        )?;
        Ok(ImageRig { fake, url, c })
    }

    /// Starts a life: a start of the container, its output in `log`.
    pub fn start_life(&mut self, log: &Path) -> Result<(), String> {
        self.c.start(log).map_err(|e| e.to_string())
    }

    /// Waits for the life to end, at most `limit` (then stops it as `docker stop` would, 10 s
    /// grace): its exit code (`None` when it had to be stopped) and its log.
    pub fn end_life(&mut self, log: &Path, limit: Duration) -> (Option<i32>, String) {
        let status = self.c.wait(limit).expect("wait for the life");
        let code = match status {
            Some(s) => s.code(),
            None => {
                let _ = self.c.stop(Duration::from_secs(10));
                None
            }
        };
        (code, std::fs::read_to_string(log).unwrap_or_default())
    }

    /// One whole life: [`ImageRig::start_life`] then [`ImageRig::end_life`].
    pub fn life(&mut self, log: &Path, limit: Duration) -> (Option<i32>, String) {
        self.start_life(log).expect("start the container");
        self.end_life(log, limit)
    }

    pub fn queue(&self, runner: &str, name: &str, steps: &[&str]) -> Job {
        self.fake.queue(runner, name, steps)
    }

    pub fn job(&self, id: u64) -> Job {
        self.fake.job(id)
    }

    pub fn runners(&self) -> Vec<RunnerState> {
        self.fake.runners()
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.fake.requests()
    }

    /// Polls `f` every 50 ms until it holds or `limit` passes.
    pub fn until(&self, limit: Duration, mut f: impl FnMut(&ImageRig) -> bool) -> bool {
        poll_until(limit, || f(self))
    }

    /// After a life: GitHub lists no runner and no process of the start is left (see
    /// [`Rig::pids_left`]). `log` is the life's log, shown when either does not hold.
    pub fn assert_ended_clean(&self, log: &str) {
        let runners = self.runners();
        assert!(runners.is_empty(), "still registered: {runners:?}\n{log}");
        let pids = pids_after_a_life(|| self.c.pids().map_err(|e| e.to_string()))
            .expect("list the container's processes");
        assert!(
            pids.is_empty(),
            "processes left 10 s after the end: {pids:?}\n{log}"
        );
    }
}
