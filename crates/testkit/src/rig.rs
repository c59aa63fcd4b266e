//! A runner container's stand-in, for the lifecycle tests, the matrix and the demo: a box
//! set up like the image (the fake actions/runner as the read-only release, a `runner` user in the
//! `docker` group, private /var/lib/sysrunner), and the fake GitHub in a network namespace of its own,
//! linked to the box by a veth pair that is the box's only link and default route (MTU 1400 on
//! purpose). Nothing a box sends leaves these namespaces. Owns the network namespace, the veth pair
//! and the fake; all go on drop.

use super::fake_github::{
    ALL_GRANTS_PAT, ControlClient, FakeConfig, FakeGitHub, Job, JobSpec, RequestRecord, RunnerState,
};
use super::{BoxKind, TestBox, binaries, fake_runner, image};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The PAT the rig's runners register with.
pub const TOKEN: &str = ALL_GRANTS_PAT;
/// The link MTU between the box and the fake GitHub: below 1500 on purpose, so the inner dockerd
/// must detect and apply it.
pub const LINK_MTU: u32 = 1400;

/// A tokio runtime on a thread inside a network namespace: every socket its tasks open lives there.
pub struct Netns {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Netns {
    /// Enters the namespace at `path` (`/proc/PID/ns/net` or `/run/netns/NAME`).
    pub fn enter(path: &Path) -> std::io::Result<Netns> {
        let ns = std::fs::File::open(path)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            if let Err(e) = nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET) {
                let _ = tx.send(Err(std::io::Error::from(e)));
                return;
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let _ = tx.send(Ok((rt.handle().clone(), stop_tx)));
            rt.block_on(async {
                let _ = stop_rx.await;
            });
        });
        let (handle, stop) = rx.recv().map_err(std::io::Error::other)??;
        Ok(Netns {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs `f` on the namespace's runtime and waits for it.
    pub fn run<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().expect("the netns runtime answered")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The fake GitHub's network namespace and the veth pair to one box.
pub struct GitHubNet {
    name: String,
    pub github_ip: Ipv4Addr,
    pub box_ip: Ipv4Addr,
}

impl GitHubNet {
    /// `slot` keeps parallel boxes apart: namespace `sysrunner-gh-SLOT`, link 10.231.SLOT.0/30.
    pub fn create(box_pid: i32, slot: u8) -> Result<GitHubNet, String> {
        let name = format!("sysrunner-gh-{slot}");
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        let net = GitHubNet {
            name,
            github_ip: Ipv4Addr::new(10, 231, slot, 1),
            box_ip: Ipv4Addr::new(10, 231, slot, 2),
        };
        let (gh, bx) = (format!("sgh{slot}"), format!("sbx{slot}"));
        let mtu = LINK_MTU.to_string();
        let n = net.name.as_str();
        let pid = box_pid.to_string();
        ip(&[
            "link", "add", &gh, "mtu", &mtu, "type", "veth", "peer", "name", &bx, "mtu", &mtu,
        ])?;
        ip(&["link", "set", &gh, "netns", n])?;
        ip(&["link", "set", &bx, "netns", &pid])?;
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{}/30", net.github_ip),
            "dev",
            &gh,
        ])?;
        ip(&["-n", n, "link", "set", &gh, "up"])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        let in_box = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("nsenter")
                .arg(format!("--net=/proc/{box_pid}/ns/net"))
                .arg("ip")
                .args(args)
                .output()
                .map_err(|e| format!("nsenter ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {} in the box: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        in_box(&["addr", "add", &format!("{}/30", net.box_ip), "dev", &bx])?;
        in_box(&["link", "set", &bx, "up"])?;
        in_box(&["route", "add", "default", "via", &net.github_ip.to_string()])?;
        Ok(net)
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for GitHubNet {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth end, and with it the box's.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// The PATH a life gets unless its settings say otherwise.
pub const BOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The box, its network to the fake GitHub, and the fake. Fields drop in this order: the
/// fake's namespace (named after the box's slot) goes before the box frees that slot.
pub struct Rig {
    ns: Netns,
    fake: Option<FakeGitHub>,
    net: GitHubNet,
    pub b: TestBox,
    pub url: String,
    ctl: ControlClient,
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
    /// GitHub (`cfg`, its address replaced by one in its own namespace).
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
        let b = builder.start().map_err(|e| format!("{kind:?} box: {e}"))?;
        let release = b.paths().runner.clone();
        fake_runner::install(&release, &listener).map_err(|e| format!("fake runner: {e}"))?;
        image::write_busybox_rootfs(&release.join("busybox.tar"))
            .map_err(|e| format!("busybox image: {e}"))?;
        // The release as an image holds it: owned by the box's root.
        chown_tree(&release, b.id_map().outside);
        Rig::around(b, cfg, files)
    }

    /// A box of `kind` on an image's own filesystem (`tree`, see `Builder::rootfs`) with a
    /// compose file's tmpfs mounts (`tmpfs`: its entries, `/tmp:exec,size=2g`, mounted as Docker
    /// mounts them), and the fake GitHub. The image brings its own sysrunner, runner user and
    /// runner; the kit's binary only builds and enters the box.
    pub fn start_image(
        kind: BoxKind,
        cfg: FakeConfig,
        tree: &Path,
        tmpfs: &[String],
    ) -> Result<Rig, String> {
        let files = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut builder = TestBox::builder(kind).rootfs(tree);
        for spec in tmpfs {
            builder = builder
                .tmpfs_docker(spec)
                .map_err(|e| format!("tmpfs {spec}: {e}"))?;
        }
        let b = builder
            .start()
            .map_err(|e| format!("{kind:?} box on {}: {e}", tree.display()))?;
        Rig::around(b, cfg, files)
    }

    /// The fake GitHub in a namespace of its own, wired to the box.
    fn around(b: TestBox, cfg: FakeConfig, files: tempfile::TempDir) -> Result<Rig, String> {
        let slot: u8 = b
            .name()
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let net = GitHubNet::create(b.pid().as_raw(), slot)?;
        let ns = Netns::enter(&net.path())
            .map_err(|e| format!("enter {}: {e}", net.path().display()))?;
        let cfg = FakeConfig {
            listen: SocketAddr::new(IpAddr::V4(net.github_ip), 0),
            ..cfg
        };
        let fake = ns.run(FakeGitHub::start(cfg)).map_err(|e| e.to_string())?;
        let url = fake.web_url().to_string();
        let ctl = fake.control();
        Ok(Rig {
            b,
            ns,
            fake: Some(fake),
            net,
            url,
            ctl,
            _files: files,
        })
    }

    pub fn box_ip(&self) -> Ipv4Addr {
        self.net.box_ip
    }

    /// The settings of a repository runner with a PAT, against the fake.
    pub fn settings(&self, name: &str) -> BTreeMap<String, String> {
        [
            ("REPO", "octo-org/octo-repo"),
            ("ACCESS_TOKEN", TOKEN),
            ("GITHUB_URL", &self.url),
            ("GITHUB_API_URL", &self.url),
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

    fn call<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
        &self,
        f: impl FnOnce(ControlClient) -> F,
    ) -> T {
        self.ns.run(f(self.ctl.clone()))
    }

    pub fn queue(&self, runner: &str, name: &str, steps: &[&str]) -> Job {
        let spec = JobSpec {
            runner_name: runner.into(),
            name: name.into(),
            steps: steps.iter().map(|s| s.to_string()).collect(),
            scope: None,
        };
        self.call(|c| async move { c.queue_job(&spec).await })
            .expect("queue a job")
    }

    pub fn job(&self, id: u64) -> Job {
        self.call(move |c| async move { c.job(id).await })
            .expect("read a job")
    }

    pub fn runners(&self) -> Vec<RunnerState> {
        self.call(|c| async move { c.runners().await })
            .expect("list runners")
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.call(|c| async move { c.requests().await })
            .expect("list requests")
    }

    /// Runs `f` in the fake GitHub's namespace (a controller's own API call, say).
    pub fn in_github_netns<T: Send + 'static>(
        &self,
        f: impl Future<Output = T> + Send + 'static,
    ) -> T {
        self.ns.run(f)
    }

    /// Polls `f` every 50 ms until it holds or `limit` passes.
    pub fn until(&self, limit: Duration, mut f: impl FnMut(&Rig) -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if f(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
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
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.b.pids().map_err(|e| e.to_string())?;
            if pids.is_empty() || Instant::now() >= end {
                return Ok(pids);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(f) = self.fake.take() {
            self.ns.run(async move { f.stop().await });
        }
    }
}
