//! The dockerd process: an exclusive lock on the data root, the spawn (through a
//! [`crate::process::Spawner`]: sysrunner's own child, or in the life sandbox; in its own process
//! group, with a clean environment), output forwarded to our log under the `dockerd` target,
//! readiness by `GET /_ping`, and stop: SIGTERM, wait, SIGKILL, then every orphan left behind
//! (containerd, shims, container inits) killed. Waits for no child itself: the reaper does.

use super::effects::LOCK_FILE;
use super::plan::{self, Plan, Version};
use crate::process::{Handle, Spawner, Spec};
use crate::reaper::ExitStatus;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::Signal;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
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
    handle: Handle,
    exit: watch::Receiver<Option<ExitStatus>>,
    spawner: Arc<dyn Spawner>,
    /// Its socket, as sysrunner reaches it.
    socket: PathBuf,
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
        spawner: Arc<dyn Spawner>,
        ready_timeout: Duration,
    ) -> Result<Dockerd, StartError> {
        let lock = lock_data_root(&spawner.outside(&plan.data_root))?;
        let binary = binary();
        let mut spec = Spec::new(&binary);
        spec.args = plan.args.clone();
        spec.env.insert("PATH".into(), path_env());
        spec.env
            .extend(plan.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let started = Instant::now();
        let child = spawner.spawn(spec).map_err(|source| StartError::Spawn {
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
        let socket = spawner.outside(Path::new(plan::SOCKET));
        let mut d = Dockerd {
            handle: child.handle,
            exit: rx,
            spawner,
            socket,
            _lock: lock,
            ready_after: Duration::ZERO,
        };
        match d.wait_ready(ready_timeout).await {
            Ok(()) => {
                d.ready_after = started.elapsed();
                Ok(d)
            }
            Err(e) => {
                d.stop(Duration::from_secs(2)).await;
                Err(e)
            }
        }
    }

    /// Its socket, as sysrunner reaches it (inside a life sandbox: through the life's root).
    pub fn socket(&self) -> &Path {
        &self.socket
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
            if ping(&self.socket).await {
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
    /// process group; then every orphan it left is killed.
    pub async fn stop(&self, grace: Duration) -> StopReport {
        let started = Instant::now();
        self.handle.signal(Signal::SIGTERM);
        let status = match tokio::time::timeout(grace, self.exited()).await {
            Ok(s) => s,
            Err(_) => {
                tracing::warn!("dockerd did not stop within {grace:?}: killing it");
                self.handle.kill_group();
                self.exited().await
            }
        };
        let orphans_killed = self.spawner.kill_orphans().await;
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

fn forward(pipe: Option<std::os::fd::OwnedFd>, stream: &'static str) {
    let Some(reader) = pipe.and_then(|p| crate::process::reader(p).ok()) else {
        return;
    };
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "dockerd", stream, "{line}");
        }
    });
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
