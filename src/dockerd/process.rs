//! The dockerd process: an exclusive lock on the data root, the containerd the plan hands it
//! started first and its socket awaited (see `plan::Containerd`), the spawn (through a
//! [`crate::process::Spawner`]: sysrunner's own child, or in the life sandbox; in its own process
//! group, with a clean environment), output forwarded to our log under the `dockerd` and
//! `containerd` targets, readiness by `GET /_ping`, and stop: SIGTERM, wait, SIGKILL, dockerd then
//! containerd, then every orphan left behind (shims, container inits) killed. Waits for no child
//! itself: the reaper does.

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
        "containerd exited before its socket {socket} appeared ({status}); its last lines are in the log above"
    )]
    ContainerdExited { socket: String, status: ExitStatus },
    #[error(
        "dockerd did not answer GET /_ping on {socket} within {timeout:?} (DOCKERD_READY_TIMEOUT)"
    )]
    NotReady { socket: String, timeout: Duration },
    /// What had to be done between containerd's start and dockerd's failed.
    #[error("before dockerd's start: {0}")]
    Prepare(String),
}

/// A process sysrunner started for dockerd: dockerd itself, or the containerd it is handed.
struct Daemon {
    handle: Handle,
    exit: watch::Receiver<Option<ExitStatus>>,
}

impl Daemon {
    fn spawn(
        spawner: &dyn Spawner,
        binary: &Path,
        args: &[String],
        env: &std::collections::BTreeMap<String, String>,
        name: Name,
    ) -> Result<Daemon, StartError> {
        let mut spec = Spec::new(binary);
        spec.args = args.to_vec();
        spec.env.insert("PATH".into(), path_env());
        spec.env
            .extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let child = spawner.spawn(spec).map_err(|source| StartError::Spawn {
            binary: binary.display().to_string(),
            source,
        })?;
        forward(child.stdout, "stdout", name);
        forward(child.stderr, "stderr", name);
        let (tx, rx) = watch::channel(None);
        let exit = child.exit;
        tokio::spawn(async move {
            if let Ok(status) = exit.await {
                let _ = tx.send(Some(status));
            }
        });
        Ok(Daemon {
            handle: child.handle,
            exit: rx,
        })
    }

    fn status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Resolves when the process exits, with its status.
    async fn exited(&self) -> ExitStatus {
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

    /// SIGTERM, up to `grace`, then SIGKILL of its process group.
    async fn stop(&self, what: &str, grace: Duration) -> ExitStatus {
        self.handle.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.exited()).await {
            Ok(s) => s,
            Err(_) => {
                tracing::warn!("{what} did not stop within {grace:?}: killing it");
                self.handle.kill_group();
                self.exited().await
            }
        }
    }
}

/// Whose output a line is.
#[derive(Clone, Copy)]
enum Name {
    Dockerd,
    Containerd,
}

/// A running dockerd.
pub struct Dockerd {
    daemon: Daemon,
    /// The containerd sysrunner started for it, if the plan says so.
    containerd: Option<Daemon>,
    spawner: Arc<dyn Spawner>,
    /// Its socket, as sysrunner reaches it.
    socket: PathBuf,
    _lock: Flock<File>,
    pub ready_after: Duration,
    /// Where it pulls Docker Hub images from ([`crate::registry`]), once [`super::launch`] knows.
    pub registry: Option<crate::registry::Registry>,
}

/// The dockerd on PATH, else Debian's.
fn binary() -> PathBuf {
    which::which("dockerd").unwrap_or_else(|_| PathBuf::from("/usr/bin/dockerd"))
}

/// The installed dockerd's version (`dockerd --version`), if there is a dockerd on PATH. Waits for
/// the child itself: only where no reaper runs (`probe`).
pub fn installed_version() -> Option<Version> {
    let bin = which::which("dockerd").ok()?;
    let out = Command::new(bin).arg("--version").output().ok()?;
    Version::parse(&String::from_utf8_lossy(&out.stdout))
}

/// [`installed_version`] through `commands`: where the reaper runs (`run`, `dockerd-check`),
/// nothing else may wait for a child.
pub async fn installed_version_via<C: crate::process::Commands>(commands: &C) -> Option<Version> {
    let bin = which::which("dockerd").ok()?;
    let mut cmd = Command::new(bin);
    cmd.arg("--version");
    let out = commands.output(cmd, Vec::new()).await.ok()?;
    Version::parse(&String::from_utf8_lossy(&out.stdout))
}

/// The `containerd` on PATH, which sysrunner then starts itself before dockerd.
pub fn installed_containerd() -> Option<PathBuf> {
    which::which("containerd").ok()
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
        Self::start_with(plan, spawner, ready_timeout, async { Ok(()) }).await
    }

    /// [`Dockerd::start`], with `before_dockerd` awaited once containerd is up (or at once when
    /// dockerd starts its own) and before dockerd is spawned; its failure stops containerd.
    pub async fn start_with(
        plan: &Plan,
        spawner: Arc<dyn Spawner>,
        ready_timeout: Duration,
        before_dockerd: impl std::future::Future<Output = Result<(), StartError>>,
    ) -> Result<Dockerd, StartError> {
        let lock = lock_data_root(&spawner.outside(&plan.data_root))?;
        let deadline = tokio::time::Instant::now() + ready_timeout;
        let started = Instant::now();
        let containerd = match &plan.containerd {
            Some(c) => {
                let d = Daemon::spawn(&*spawner, &c.binary, &c.args, &plan.env, Name::Containerd)?;
                let socket = spawner.outside(&c.socket);
                if let Err(e) =
                    wait_for_socket(&d, &socket, &c.socket, deadline, ready_timeout).await
                {
                    d.stop("containerd", Duration::from_secs(2)).await;
                    spawner.kill_orphans().await;
                    return Err(e);
                }
                tracing::debug!(
                    "containerd listening after {:.3}s",
                    started.elapsed().as_secs_f64()
                );
                Some(d)
            }
            None => None,
        };
        let spawned = match before_dockerd.await {
            Ok(()) => Daemon::spawn(&*spawner, &binary(), &plan.args, &plan.env, Name::Dockerd),
            Err(e) => Err(e),
        };
        let daemon = match spawned {
            Ok(d) => d,
            Err(e) => {
                if let Some(c) = &containerd {
                    c.stop("containerd", Duration::from_secs(2)).await;
                }
                spawner.kill_orphans().await;
                return Err(e);
            }
        };
        let socket = spawner.outside(Path::new(plan::SOCKET));
        let mut d = Dockerd {
            daemon,
            containerd,
            spawner,
            socket,
            _lock: lock,
            ready_after: Duration::ZERO,
            registry: None,
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match d.wait_ready(left, ready_timeout).await {
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

    /// SIGHUP: dockerd reads its daemon.json again (registry-mirrors among what it reloads live),
    /// then waits up to `limit` until its `/info` lists `mirrors`: the reload is applied a moment
    /// after the signal. Only once it answers `/_ping`: before, the signal kills it.
    pub async fn reload_mirrors(&self, mirrors: &[String], limit: Duration) -> Result<(), String> {
        self.daemon.handle.signal(Signal::SIGHUP);
        let want: Vec<&str> = mirrors.iter().map(|m| m.trim_end_matches('/')).collect();
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = None;
        loop {
            let asked = tokio::time::timeout_at(deadline, info_mirrors(&self.socket)).await;
            seen = asked.ok().flatten().or(seen);
            if let Some(s) = &seen
                && s.iter()
                    .map(|m| m.trim_end_matches('/'))
                    .eq(want.iter().copied())
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "dockerd did not apply registry-mirrors {mirrors:?} within {limit:?} after SIGHUP (it lists {seen:?})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether sysrunner started containerd for this dockerd (else dockerd started its own).
    pub fn own_containerd(&self) -> bool {
        self.containerd.is_some()
    }

    /// Its socket, as sysrunner reaches it (inside a life sandbox: through the life's root).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Resolves when dockerd exits, with its status.
    pub async fn exited(&self) -> ExitStatus {
        self.daemon.exited().await
    }

    async fn wait_ready(&mut self, left: Duration, timeout: Duration) -> Result<(), StartError> {
        let deadline = tokio::time::Instant::now() + left;
        let mut delay = Duration::from_millis(10);
        loop {
            if let Some(status) = self.daemon.status() {
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

    /// SIGTERM, up to `grace` for dockerd to stop its containers, then SIGKILL of its process
    /// group; then the containerd sysrunner started, within what is left of `grace` (at least a
    /// second); then every orphan left (shims, container inits) is killed.
    pub async fn stop(&self, grace: Duration) -> StopReport {
        let started = Instant::now();
        let status = self.daemon.stop("dockerd", grace).await;
        if let Some(c) = &self.containerd {
            let left = grace
                .saturating_sub(started.elapsed())
                .max(Duration::from_secs(1));
            c.stop("containerd", left).await;
        }
        let orphans_killed = self.spawner.kill_orphans().await;
        StopReport {
            status,
            orphans_killed,
            took: started.elapsed(),
        }
    }
}

/// Waits until containerd's socket exists (it is made once containerd serves), polling from 1 ms,
/// never slower than 20 ms; fails when containerd exits first or the deadline passes.
async fn wait_for_socket(
    d: &Daemon,
    socket: &Path,
    shown: &Path,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<(), StartError> {
    let mut delay = Duration::from_millis(1);
    loop {
        if let Some(status) = d.status() {
            return Err(StartError::ContainerdExited {
                socket: shown.display().to_string(),
                status,
            });
        }
        if socket.exists() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StartError::NotReady {
                socket: shown.display().to_string(),
                timeout,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

#[derive(Debug, Clone, Copy)]
pub struct StopReport {
    pub status: ExitStatus,
    pub orphans_killed: usize,
    pub took: Duration,
}

fn forward(pipe: Option<std::os::fd::OwnedFd>, stream: &'static str, name: Name) {
    let Some(reader) = pipe.and_then(|p| crate::process::reader(p).ok()) else {
        return;
    };
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match name {
                Name::Dockerd => tracing::info!(target: "dockerd", stream, "{line}"),
                Name::Containerd => tracing::info!(target: "containerd", stream, "{line}"),
            }
        }
    });
}

/// `GET /_ping` on dockerd's socket: true when it answers 200 `OK`.
/// The registry mirrors dockerd says it uses (`/info`'s `RegistryConfig.Mirrors`), if it answers.
pub async fn info_mirrors(socket: &Path) -> Option<Vec<String>> {
    let attempt = async {
        let mut s = tokio::net::UnixStream::connect(socket).await.ok()?;
        s.write_all(b"GET /info HTTP/1.0\r\nHost: docker\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::with_capacity(8192);
        s.read_to_end(&mut buf).await.ok()?;
        mirrors_of_info(&buf)
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

/// `RegistryConfig.Mirrors` of an HTTP/1.0 answer to `GET /info` (`null` is none).
fn mirrors_of_info(answer: &[u8]) -> Option<Vec<String>> {
    let text = std::str::from_utf8(answer).ok()?;
    if !(text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200")) {
        return None;
    }
    let body = &text[text.find("\r\n\r\n")? + 4..];
    let info: serde_json::Value = serde_json::from_str(body).ok()?;
    let m = info.get("RegistryConfig")?.get("Mirrors")?;
    if m.is_null() {
        return Some(Vec::new());
    }
    serde_json::from_value(m.clone()).ok()
}

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

#[cfg(test)]
mod tests {
    use super::mirrors_of_info;

    #[test]
    fn mirrors_are_read_from_infos_answer() {
        let answer =
            |body: &str| format!("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{body}");
        assert_eq!(
            mirrors_of_info(
                answer(r#"{"RegistryConfig":{"Mirrors":["http://cache:5000/"]}}"#).as_bytes()
            ),
            Some(vec!["http://cache:5000/".to_string()])
        );
        assert_eq!(
            mirrors_of_info(answer(r#"{"RegistryConfig":{"Mirrors":null}}"#).as_bytes()),
            Some(vec![])
        );
        assert_eq!(mirrors_of_info(b"HTTP/1.0 500 Internal\r\n\r\n{}"), None);
        assert_eq!(mirrors_of_info(answer("{not json").as_bytes()), None);
    }
}
