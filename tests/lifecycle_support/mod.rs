//! What the lifecycle tests share: a box set up like a runner container (the fake runner as the
//! release, a `runner` user, private state), the fake GitHub in the box's own network namespace,
//! and `sysrunner run` started in the box with a clean environment.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use sysrunner::testkit::fake_github::{
    ALL_GRANTS_PAT, ControlClient, FakeConfig, FakeGitHub, Job, JobSpec, RunnerState,
};
use sysrunner::testkit::{self, BoxKind, Need, TestBox, fake_runner, image};

pub const EXE: &str = env!("CARGO_BIN_EXE_sysrunner");
pub const LISTENER: &str = env!("CARGO_BIN_EXE_fake-runner-listener");
pub const NEEDS: [Need; 6] = [
    Need::Root,
    Need::UserNamespaces,
    Need::Cgroups,
    Need::Overlay,
    Need::Dockerd,
    Need::Busybox,
];
pub const TOKEN: &str = ALL_GRANTS_PAT;

/// A tokio runtime on a thread that has entered the box's network namespace: every socket its
/// tasks open lives there, so the fake GitHub listens on the box's loopback and nothing leaves it.
pub struct Netns {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Netns {
    pub fn enter(pid: i32) -> Netns {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("the box's netns");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("setns into the box's netns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            tx.send((rt.handle().clone(), stop_tx)).unwrap();
            rt.block_on(async {
                let _ = stop_rx.await;
            });
        });
        let (handle, stop) = rx.recv().unwrap();
        Netns {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        }
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

pub struct Runner {
    pub b: TestBox,
    pub net: Netns,
    fake: Option<FakeGitHub>,
    pub url: String,
    ctl: ControlClient,
    _files: tempfile::TempDir,
}

/// passwd and group with the runner user (uid 1001) in the docker group, bound over the box's.
fn user_files(dir: &Path) -> (PathBuf, PathBuf) {
    let passwd: String = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("runner:"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + "runner:x:1001:1001:runner:/home/runner:/bin/sh\n";
    let host_group = std::fs::read_to_string("/etc/group").unwrap();
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
    let (p, g) = (dir.join("passwd"), dir.join("group"));
    std::fs::write(&p, passwd).unwrap();
    std::fs::write(&g, group).unwrap();
    (p, g)
}

fn chown_tree(path: &Path, uid: u32) {
    let _ = nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(uid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    );
    if path.is_dir() && !path.is_symlink() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

impl Runner {
    pub fn start(kind: BoxKind, cfg: FakeConfig) -> Runner {
        let files = tempfile::tempdir().unwrap();
        let (passwd, group) = user_files(files.path());
        let mut builder = TestBox::builder(kind)
            .exe(EXE)
            .tmpfs("/var/lib/sysrunner")
            .bind(passwd, "/etc/passwd")
            .bind(group, "/etc/group");
        if Path::new("/etc/sudoers.d").is_dir() {
            builder = builder.tmpfs("/etc/sudoers.d");
        }
        let b = builder
            .start()
            .unwrap_or_else(|e| panic!("{kind:?} box: {e}"));
        // The release, as an image holds it: root-owned (the box's root), with a busybox image
        // for jobs to import.
        let release = b.paths().runner.clone();
        fake_runner::install(&release, Path::new(LISTENER)).unwrap();
        image::write_busybox_rootfs(&release.join("busybox.tar")).unwrap();
        chown_tree(&release, b.id_map().outside);
        let net = Netns::enter(b.pid().as_raw());
        let fake = net
            .run(FakeGitHub::start(cfg))
            .expect("the fake GitHub starts in the box's netns");
        let url = fake.web_url().to_string();
        let ctl = fake.control();
        Runner {
            b,
            net,
            fake: Some(fake),
            url,
            ctl,
            _files: files,
        }
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
            ("DOCKER_MTU", "1400"),
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

    /// `sysrunner run` in the box, with exactly `env` (and PATH).
    pub fn spawn(&self, env: &BTreeMap<String, String>, log: &Path) -> Child {
        let out = std::fs::File::create(log).unwrap();
        let mut c: Command = self.b.command(EXE);
        c.env_clear()
            .env("HOME", "/root")
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(env)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        c.spawn().unwrap()
    }

    /// One whole life: spawn, wait for the exit (bounded), return its code and log.
    pub fn life(&self, env: &BTreeMap<String, String>, limit: Duration) -> (Option<i32>, String) {
        let log = self.b.paths().state.join(format!(
            "life-{}.log",
            std::process::id() as u128 + Instant::now().elapsed().as_nanos()
        ));
        let mut child = self.spawn(env, &log);
        let status = testkit::boxes::wait_within(&mut child, limit).unwrap();
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        (
            status.and_then(|s| s.code()),
            std::fs::read_to_string(&log).unwrap_or_default(),
        )
    }

    pub fn queue(&self, runner: &str, name: &str, steps: &[&str]) -> Job {
        let spec = JobSpec {
            runner_name: runner.into(),
            name: name.into(),
            steps: steps.iter().map(|s| s.to_string()).collect(),
            scope: None,
        };
        let ctl = self.ctl.clone();
        self.net
            .run(async move { ctl.queue_job(&spec).await })
            .unwrap()
    }

    pub fn job(&self, id: u64) -> Job {
        let ctl = self.ctl.clone();
        self.net.run(async move { ctl.job(id).await }).unwrap()
    }

    pub fn runners(&self) -> Vec<RunnerState> {
        let ctl = self.ctl.clone();
        self.net.run(async move { ctl.runners().await }).unwrap()
    }

    pub fn requests(&self) -> Vec<sysrunner::testkit::fake_github::RequestRecord> {
        let ctl = self.ctl.clone();
        self.net.run(async move { ctl.requests().await }).unwrap()
    }

    /// Polls `f` every 50 ms until it holds or `limit` passes.
    pub fn until(&self, limit: Duration, what: &str, mut f: impl FnMut(&Runner) -> bool) {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out after {limit:?} waiting for {what}");
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

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(f) = self.fake.take() {
            self.net.run(async move { f.stop().await });
        }
    }
}
