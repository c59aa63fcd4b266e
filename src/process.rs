//! Starting, signalling and ending the processes of a life (dockerd, `config.sh`, the runner's
//! listener), wherever the life runs: as sysrunner's own children ([`Local`], through the reaper),
//! or inside the life sandbox (`sandbox::life`, through the life's init). A [`Spawner`] is where;
//! a [`Spec`] is what; a [`Proc`] is the running process: its output pipes, its exit, and a
//! [`Handle`] to signal it. Owns no process and decides nothing about one.

use crate::reaper::{ExitStatus, Reaper};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Gid, Pid, Uid};
use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use tokio::sync::oneshot;

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Whom a process runs as, its supplementary groups computed by the caller (the `docker` group
/// grants the socket).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// What to run. The environment is exactly `env` (nothing inherited); stdin is /dev/null, stdout
/// and stderr are pipes; the process leads a process group of its own, so that its whole group
/// can be killed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub user: Option<User>,
}

impl Spec {
    pub fn new(program: impl Into<PathBuf>) -> Spec {
        Spec {
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            user: None,
        }
    }
}

/// Signals a running process (or its process group).
pub trait Signaller: Send + Sync {
    fn signal(&self, sig: Signal, group: bool);
}

/// A cheap handle to signal one process.
#[derive(Clone)]
pub struct Handle(Arc<dyn Signaller>);

impl Handle {
    pub fn new(s: impl Signaller + 'static) -> Handle {
        Handle(Arc::new(s))
    }

    pub fn signal(&self, sig: Signal) {
        self.0.signal(sig, false);
    }

    pub fn kill_group(&self) {
        self.0.signal(Signal::SIGKILL, true);
        self.0.signal(Signal::SIGKILL, false);
    }
}

/// A started process.
pub struct Proc {
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub exit: oneshot::Receiver<ExitStatus>,
    pub handle: Handle,
}

/// Where a life's processes run.
pub trait Spawner: Send + Sync {
    fn spawn(&self, spec: Spec) -> io::Result<Proc>;
    /// Kills every process left behind once dockerd has stopped (containerd, shims, container
    /// inits re-parented to the life's reaper); how many.
    fn kill_orphans(&self) -> BoxFut<'_, usize>;
    /// Where a path of the life's file system is, seen from sysrunner (dockerd's socket).
    fn outside(&self, inside: &Path) -> PathBuf;
}

/// sysrunner's own children: spawned through the one reaper, signalled by pid.
#[derive(Clone)]
pub struct Local {
    pub reaper: Reaper,
}

struct ByPid(Pid);

impl Signaller for ByPid {
    fn signal(&self, sig: Signal, group: bool) {
        let _ = if group {
            killpg(self.0, sig)
        } else {
            kill(self.0, sig)
        };
    }
}

impl Spawner for Local {
    fn spawn(&self, spec: Spec) -> io::Result<Proc> {
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        if let Some(u) = spec.user.clone() {
            let groups: Vec<Gid> = u.groups.iter().map(|g| Gid::from_raw(*g)).collect();
            let (uid, gid) = (Uid::from_raw(u.uid), Gid::from_raw(u.gid));
            // std's own uid/gid would clear the supplementary groups, so the switch is by hand.
            // SAFETY: only async-signal-safe calls (setgroups, setgid, setuid) between fork and
            // exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::unistd::setgroups(&groups).map_err(io::Error::from)?;
                    nix::unistd::setgid(gid).map_err(io::Error::from)?;
                    nix::unistd::setuid(uid).map_err(io::Error::from)?;
                    Ok(())
                });
            }
        }
        let child = self.reaper.spawn(&mut cmd)?;
        Ok(Proc {
            stdout: child.stdout.map(OwnedFd::from),
            stderr: child.stderr.map(OwnedFd::from),
            exit: child.exit,
            handle: Handle::new(ByPid(child.pid)),
        })
    }

    fn kill_orphans(&self) -> BoxFut<'_, usize> {
        Box::pin(crate::reaper::kill_orphans(
            &self.reaper,
            std::time::Duration::from_secs(5),
        ))
    }

    fn outside(&self, inside: &Path) -> PathBuf {
        inside.to_path_buf()
    }
}

/// An output pipe of a process, readable by tokio.
pub fn reader(fd: OwnedFd) -> io::Result<tokio::net::unix::pipe::Receiver> {
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
}

/// How a command ran.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs a command to its end, with `stdin` as its input. sysrunner's is its [`Reaper`], since
/// nothing else in sysrunner may wait for a child; a test without a reaper passes its own. The
/// command must be started from the calling thread: iptables acts on the network namespace of
/// the thread that forks it.
pub trait Commands: Clone + Send + Sync + 'static {
    fn output(
        &self,
        cmd: Command,
        stdin: Vec<u8>,
    ) -> impl Future<Output = io::Result<Output>> + Send;
}

impl Commands for Reaper {
    async fn output(&self, mut cmd: Command, input: Vec<u8>) -> io::Result<Output> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.spawn(&mut cmd)?;
        let stdin = child.stdin.take();
        let write = tokio::task::spawn_blocking(move || {
            if let Some(mut pipe) = stdin {
                pipe.write_all(&input)?;
            }
            Ok::<_, io::Error>(())
        });
        // All pipes at once: a child blocked on a full stderr would never close its stdout, nor
        // read the rest of its input.
        let stdout = read_all(child.stdout);
        let stderr = read_all(child.stderr);
        let status = child
            .exit
            .await
            .map_err(|_| io::Error::other("the reaper lost the exit status"))?;
        let stdout = stdout.await.map_err(io::Error::other)??;
        let stderr = stderr.await.map_err(io::Error::other)??;
        // A child that exits without reading all of its input breaks the pipe: its status says
        // what went wrong, not the EPIPE.
        let _ = write.await;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
}

fn read_all<R: Read + Send + 'static>(
    pipe: Option<R>,
) -> tokio::task::JoinHandle<io::Result<Vec<u8>>> {
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            p.read_to_end(&mut buf)?;
        }
        Ok(buf)
    })
}
