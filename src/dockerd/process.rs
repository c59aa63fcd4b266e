//! The dockerd process: an exclusive lock on the data root, the spawn (through the reaper, in its
//! own process group, with a clean environment), output forwarded to our log under the `dockerd`
//! target, readiness by `GET /_ping`, and stop: SIGTERM, wait, SIGKILL, then every orphan left
//! behind (containerd, shims, container inits) killed and reaped. Waits for no child itself: the
//! reaper does.

use super::effects::LOCK_FILE;
use super::plan::{self, Plan, Version};
use crate::reaper::{self, ExitStatus, Reaper};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "the data root {0} is locked by another sysrunner: two dockerds on one data root corrupt it; give each runner its own /var/lib/docker (an anonymous volume, not a named one shared by replicas)"
    )]
    Locked(PathBuf),
    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("cannot start {binary}: {source}")]
    Spawn { binary: String, source: io::Error },
    #[error("dockerd exited before it was ready ({0}); its last lines are in the log above")]
    Exited(ExitStatus),
    #[error(
        "dockerd did not answer GET /_ping on {socket} within {timeout:?} (DOCKERD_READY_TIMEOUT)"
    )]
    NotReady { socket: String, timeout: Duration },
}

/// A running dockerd.
pub struct Dockerd {
    pid: Pid,
    exit: watch::Receiver<Option<ExitStatus>>,
    _lock: Flock<File>,
    pub ready_after: Duration,
}

/// The dockerd on PATH, else Debian's.
fn binary() -> PathBuf {
    which::which("dockerd").unwrap_or_else(|_| PathBuf::from("/usr/bin/dockerd"))
}

/// The installed dockerd's version (`dockerd --version`), if there is a dockerd on PATH.
pub fn installed_version() -> Option<Version> {
    let bin = which::which("dockerd").ok()?;
    let out = Command::new(bin).arg("--version").output().ok()?;
    Version::parse(&String::from_utf8_lossy(&out.stdout))
}

/// dockerd's PATH: the chosen iptables backend first.
fn path_env() -> String {
    format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        plan::IPTABLES_DIR
    )
}

/// Takes the data root's lock, or says who holds it.
pub fn lock_data_root(data_root: &Path) -> Result<Flock<File>, StartError> {
    let path = data_root.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StartError::Lock {
            path: path.clone(),
            source,
        })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            StartError::Locked(data_root.to_path_buf())
        } else {
            StartError::Lock {
                path,
                source: e.into(),
            }
        }
    })
}

impl Dockerd {
    /// Starts dockerd as planned (after [`super::effects::prepare`]; [`super::launch`] does both)
    /// and waits until it answers `/_ping`, or exits, or `ready_timeout` passes.
    pub async fn start(
        plan: &Plan,
        reaper: &Reaper,
        ready_timeout: Duration,
    ) -> Result<Dockerd, StartError> {
        let lock = lock_data_root(&plan.data_root)?;
        let binary = binary();
        let mut cmd = Command::new(&binary);
        cmd.args(&plan.args)
            .env_clear()
            .env("PATH", path_env())
            .envs(&plan.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let started = Instant::now();
        let child = reaper.spawn(&mut cmd).map_err(|source| StartError::Spawn {
            binary: binary.display().to_string(),
            source,
        })?;
        forward(child.stdout, "stdout");
        forward(child.stderr, "stderr");
        let (tx, rx) = watch::channel(None);
        let exit = child.exit;
        tokio::spawn(async move {
            if let Ok(status) = exit.await {
                let _ = tx.send(Some(status));
            }
        });
        let mut d = Dockerd {
            pid: child.pid,
            exit: rx,
            _lock: lock,
            ready_after: Duration::ZERO,
        };
        match d.wait_ready(ready_timeout).await {
            Ok(()) => {
                d.ready_after = started.elapsed();
                Ok(d)
            }
            Err(e) => {
                d.stop(Duration::from_secs(2), reaper).await;
                Err(e)
            }
        }
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Resolves when dockerd exits, with its status.
    pub async fn exited(&self) -> ExitStatus {
        let mut rx = self.exit.clone();
        loop {
            if let Some(s) = *rx.borrow_and_update() {
                return s;
            }
            if rx.changed().await.is_err() {
                // The watcher is gone only if the reaper dropped the owner: treat as killed.
                return ExitStatus::Signal(Signal::SIGKILL as i32);
            }
        }
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), StartError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut delay = Duration::from_millis(10);
        loop {
            if let Some(status) = *self.exit.borrow() {
                return Err(StartError::Exited(status));
            }
            if ping(Path::new(plan::SOCKET)).await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StartError::NotReady {
                    socket: plan::SOCKET.into(),
                    timeout,
                });
            }
            tokio::time::sleep(delay).await;
            // Fast at first (dockerd is often up in well under a second), never slower than 100 ms.
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// SIGTERM, up to `grace` for dockerd to stop its containers and containerd, then SIGKILL of its
    /// process group; then every orphan re-parented to us is killed and reaped.
    pub async fn stop(&self, grace: Duration, reaper: &Reaper) -> StopReport {
        let started = Instant::now();
        let _ = kill(self.pid, Signal::SIGTERM);
        let status = match tokio::time::timeout(grace, self.exited()).await {
            Ok(s) => s,
            Err(_) => {
                tracing::warn!("dockerd did not stop within {grace:?}: killing it");
                let _ = killpg(self.pid, Signal::SIGKILL);
                let _ = kill(self.pid, Signal::SIGKILL);
                self.exited().await
            }
        };
        let orphans_killed = reaper::kill_orphans(reaper, Duration::from_secs(5)).await;
        StopReport {
            status,
            orphans_killed,
            took: started.elapsed(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct StopReport {
    pub status: ExitStatus,
    pub orphans_killed: usize,
    pub took: Duration,
}

fn forward<R: IntoAsync>(pipe: Option<R>, stream: &'static str) {
    let Some(pipe) = pipe else { return };
    let Ok(reader) = pipe.into_async() else {
        return;
    };
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "dockerd", stream, "{line}");
        }
    });
}

/// A std pipe of a child, made readable by tokio.
pub trait IntoAsync {
    type Async: tokio::io::AsyncRead + Unpin + Send + 'static;
    fn into_async(self) -> io::Result<Self::Async>;
}

impl IntoAsync for std::process::ChildStdout {
    type Async = tokio::process::ChildStdout;
    fn into_async(self) -> io::Result<Self::Async> {
        tokio::process::ChildStdout::from_std(self)
    }
}

impl IntoAsync for std::process::ChildStderr {
    type Async = tokio::process::ChildStderr;
    fn into_async(self) -> io::Result<Self::Async> {
        tokio::process::ChildStderr::from_std(self)
    }
}

/// `GET /_ping` on dockerd's socket: true when it answers 200 `OK`.
pub async fn ping(socket: &Path) -> bool {
    let attempt = async {
        let mut s = tokio::net::UnixStream::connect(socket).await.ok()?;
        s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::with_capacity(512);
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        Some(text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
