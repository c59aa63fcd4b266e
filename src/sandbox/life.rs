//! A running life, seen from sysrunner: the life's init started (`sysrunner life-init`, through the
//! reaper), told its [`Setup`], and then used as the [`Spawner`] of the life's processes: each
//! spawn sends the init the process and its two output pipes, whose read ends sysrunner keeps; the
//! init reports exits. Ending the life closes the control socket: the init kills every process of
//! the life and exits, and the kernel frees the life's namespaces. Owns the control socket and the
//! setup process; the mounts are the init's, the network and cgroup `super::net`'s and
//! `super::cgroup`'s.

use super::protocol::{CONTROL_FD, FromLife, MAX_MESSAGE, Setup, ToLife};
use crate::process::{BoxFut, Handle, Proc, Signaller, Spawner, Spec};
use crate::reaper::{ExitStatus, Reaper};
use nix::sys::signal::Signal;
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair,
};
use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, watch};

/// Why a life could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the life's init: {0}")]
    Spawn(#[source] io::Error),
    #[error("the life's init failed to {step}: {error}")]
    Failed { step: String, error: String },
    #[error("the life's init ended before the life was built")]
    Ended,
    #[error("the life was not built within {0:?}")]
    Timeout(Duration),
}

struct Inner {
    sock: AsyncFd<OwnedFd>,
    next: AtomicU64,
    exits: Mutex<HashMap<u64, oneshot::Sender<ExitStatus>>>,
    orphans: Mutex<Option<oneshot::Sender<usize>>>,
    /// The life's PID 1, in the container's pid namespace.
    pid: i32,
}

impl Inner {
    fn send(&self, m: &ToLife, fds: &[i32]) -> io::Result<()> {
        let bytes = serde_json::to_vec(m).map_err(io::Error::other)?;
        let iov = [IoSlice::new(&bytes)];
        let cmsgs: Vec<ControlMessage> = if fds.is_empty() {
            Vec::new()
        } else {
            vec![ControlMessage::ScmRights(fds)]
        };
        // A few hundred bytes on a local socket: it never blocks for long; EAGAIN is retried.
        loop {
            match sendmsg::<()>(self.sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A life whose init runs.
pub struct Life {
    inner: Arc<Inner>,
    /// The setup process's exit: the life has ended.
    ended: watch::Receiver<bool>,
    setup_handle: Handle,
    setup_pid: i32,
}

async fn recv(sock: &AsyncFd<OwnedFd>) -> io::Result<Option<FromLife>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let mut guard = sock.readable().await?;
        match guard.try_io(|s| {
            nix::sys::socket::recv(s.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT)
                .map_err(io::Error::from)
        }) {
            Ok(Ok(0)) => return Ok(None),
            Ok(Ok(n)) => {
                return serde_json::from_slice(&buf[..n])
                    .map(Some)
                    .map_err(io::Error::other);
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

/// A life's init started but not yet built: [`Starting::setup`] gives it its [`Setup`],
/// [`Starting::forked`] waits until its namespaces exist, [`Starting::ready`] until it is built.
/// Dropped before it is ready, it closes the control socket and kills the setup process: the
/// init, if it was forked, ends the life when it sees the socket close.
pub struct Starting {
    inner: Option<Inner>,
    ended: watch::Receiver<bool>,
    child: nix::unistd::Pid,
    deadline: tokio::time::Instant,
    timeout: Duration,
    /// The life's PID 1 once forked, else 0.
    pid: i32,
    /// The init said the life is built.
    built: bool,
}

impl Life {
    /// Starts the life's init from `exe` (sysrunner's own binary). It waits for its setup;
    /// whatever the setup needs may be prepared meanwhile, while the new process loads.
    pub fn spawn(exe: &Path, reaper: &Reaper, timeout: Duration) -> Result<Starting, StartError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .map_err(|e| StartError::Spawn(e.into()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("life-init")
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let theirs_fd = theirs.as_raw_fd();
        // SAFETY: only dup2 and fcntl between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 to the fixed number clears close-on-exec on the copy; the socket must be
                // blocking in the init, which waits on it.
                if nix::libc::dup2(theirs_fd, CONTROL_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                let fl = nix::libc::fcntl(CONTROL_FD, nix::libc::F_GETFL);
                nix::libc::fcntl(CONTROL_FD, nix::libc::F_SETFL, fl & !nix::libc::O_NONBLOCK);
                Ok(())
            });
        }
        let child = reaper.spawn(&mut cmd).map_err(StartError::Spawn)?;
        drop(theirs);
        let (ended_tx, ended) = watch::channel(false);
        let exit = child.exit;
        tokio::spawn(async move {
            let _ = exit.await;
            let _ = ended_tx.send(true);
        });
        let starting = |inner| Starting {
            inner,
            ended,
            child: child.pid,
            deadline,
            timeout,
            pid: 0,
            built: false,
        };
        // SAFETY: an OwnedFd keeps its descriptor open and the same for as long as it lives.
        let sock = match unsafe { AsyncFd::register(ours) } {
            Ok(s) => s,
            Err(e) => {
                child_kill(child.pid);
                return Err(StartError::Spawn(io::Error::other(e.to_string())));
            }
        };
        Ok(starting(Some(Inner {
            sock,
            next: AtomicU64::new(1),
            exits: Mutex::new(HashMap::new()),
            orphans: Mutex::new(None),
            pid: 0,
        })))
    }

    /// Starts the life's init from `exe`, gives it `setup` and waits until the life is built:
    /// [`Life::spawn`], [`Starting::setup`], [`Starting::ready`]. Its network namespace exists
    /// from then on, empty but for `lo`: `super::net` joins it to the container's before
    /// anything of the life starts.
    pub async fn start(
        exe: &Path,
        setup: &Setup,
        reaper: &Reaper,
        timeout: Duration,
    ) -> Result<Life, StartError> {
        let mut starting = Life::spawn(exe, reaper, timeout)?;
        starting.setup(setup)?;
        starting.ready().await
    }

    /// The life's PID 1, in the container's pid namespace.
    pub fn pid(&self) -> i32 {
        self.inner.pid
    }

    /// The setup process: sysrunner's child, waiting for the life's PID 1 to end.
    pub fn setup_pid(&self) -> i32 {
        self.setup_pid
    }

    /// The life's root, as sysrunner reaches it.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.inner.pid))
    }

    pub fn spawner(&self) -> Arc<dyn Spawner> {
        Arc::new(LifeSpawner(self.inner.clone()))
    }

    /// Ends the life: closes the control socket (the init kills every process of the life and
    /// exits) and waits, up to `grace`, for the end; then kills the life's PID 1 from outside,
    /// which ends its PID namespace whatever a job did.
    pub async fn end(mut self, grace: Duration) {
        let _ = nix::sys::socket::shutdown(
            self.inner.sock.as_raw_fd(),
            nix::sys::socket::Shutdown::Both,
        );
        let ended = tokio::time::timeout(grace, self.ended.wait_for(|e| *e))
            .await
            .is_ok();
        if !ended {
            tracing::warn!("the life's init did not end within {grace:?}: killing the life");
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.inner.pid), Signal::SIGKILL);
            self.setup_handle.signal(Signal::SIGKILL);
            let _ = self.ended.wait_for(|e| *e).await;
        }
        // Whatever still waits for an exit gets one: the life is gone.
        for (_, tx) in self.inner.exits.lock().expect("exits").drain() {
            let _ = tx.send(ExitStatus::Signal(Signal::SIGKILL as i32));
        }
    }
}

impl Starting {
    /// Sends the init its setup: it joins the cgroups, unshares the namespaces and forks.
    pub fn setup(&mut self, setup: &Setup) -> Result<(), StartError> {
        let inner = self.inner.as_ref().ok_or(StartError::Ended)?;
        inner
            .send(&ToLife::Setup(setup.clone()), &[])
            .map_err(StartError::Spawn)
    }

    /// Waits until the life's PID 1 is forked, and returns its pid (in the container's PID
    /// namespace): the life's namespaces exist from then on, while its init still builds the
    /// mount table.
    pub async fn forked(&mut self) -> Result<i32, StartError> {
        while self.pid == 0 {
            self.next().await?;
        }
        Ok(self.pid)
    }

    /// Waits until the life is built (mounted, pivoted, its init serving), then serves it.
    pub async fn ready(mut self) -> Result<Life, StartError> {
        while self.pid == 0 || !self.built {
            self.next().await?;
        }
        let mut inner = self.inner.take().ok_or(StartError::Ended)?;
        inner.pid = self.pid;
        let inner = Arc::new(inner);
        tokio::spawn(serve(inner.clone()));
        Ok(Life {
            inner,
            ended: self.ended.clone(),
            setup_handle: Handle::new(ByPid(self.child)),
            setup_pid: self.child.as_raw(),
        })
    }

    /// Takes the next message of the init before the deadline: the pid it forked, or that the
    /// life is built (the two come from two processes: either may be read first). A failure it
    /// reports, its end or the deadline are errors.
    async fn next(&mut self) -> Result<(), StartError> {
        let inner = self.inner.as_ref().ok_or(StartError::Ended)?;
        let next = async {
            loop {
                match recv(&inner.sock).await {
                    Ok(Some(FromLife::Failed { step, error })) => {
                        return Err(StartError::Failed { step, error });
                    }
                    Ok(Some(m @ (FromLife::Forked { .. } | FromLife::Ready))) => return Ok(m),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return Err(StartError::Ended),
                }
            }
        };
        match tokio::time::timeout_at(self.deadline, next).await {
            Ok(Ok(FromLife::Forked { pid })) => self.pid = pid,
            Ok(Ok(_)) => self.built = true,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(StartError::Timeout(self.timeout)),
        }
        Ok(())
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if self.inner.take().is_some() {
            child_kill(self.child);
        }
    }
}

fn child_kill(pid: nix::unistd::Pid) {
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
}

struct ByPid(nix::unistd::Pid);

impl Signaller for ByPid {
    fn signal(&self, sig: Signal, _group: bool) {
        let _ = nix::sys::signal::kill(self.0, sig);
    }
}

/// Reads what the init says for as long as the life lasts.
async fn serve(inner: Arc<Inner>) {
    loop {
        match recv(&inner.sock).await {
            Ok(Some(FromLife::Exited { id, status })) => {
                if let Some(tx) = inner.exits.lock().expect("exits").remove(&id) {
                    let _ = tx.send(status.into());
                }
            }
            Ok(Some(FromLife::SpawnFailed { id, error })) => {
                tracing::error!("the life could not start process {id}: {error}");
                if let Some(tx) = inner.exits.lock().expect("exits").remove(&id) {
                    let _ = tx.send(ExitStatus::Code(127));
                }
            }
            Ok(Some(FromLife::OrphansKilled { count })) => {
                if let Some(tx) = inner.orphans.lock().expect("orphans").take() {
                    let _ = tx.send(count);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    // The life is over: every process of it has ended.
    for (_, tx) in inner.exits.lock().expect("exits").drain() {
        let _ = tx.send(ExitStatus::Signal(Signal::SIGKILL as i32));
    }
}

struct LifeSpawner(Arc<Inner>);

struct InLife {
    inner: Arc<Inner>,
    id: u64,
}

impl Signaller for InLife {
    fn signal(&self, sig: Signal, group: bool) {
        let _ = self.inner.send(
            &ToLife::Signal {
                id: self.id,
                signal: sig as i32,
                group,
            },
            &[],
        );
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

impl Spawner for LifeSpawner {
    fn spawn(&self, spec: Spec) -> io::Result<Proc> {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (tx, rx) = oneshot::channel();
        self.0.exits.lock().expect("exits").insert(id, tx);
        let sent = self.0.send(
            &ToLife::Spawn { id, spec },
            &[out_w.as_fd().as_raw_fd(), err_w.as_fd().as_raw_fd()],
        );
        // Our copies of the write ends go: the life's process holds the only ones, so the read
        // ends see the end of its output when it exits.
        drop((out_w, err_w));
        if let Err(e) = sent {
            self.0.exits.lock().expect("exits").remove(&id);
            return Err(e);
        }
        Ok(Proc {
            stdout: Some(out_r),
            stderr: Some(err_r),
            exit: rx,
            handle: Handle::new(InLife {
                inner: self.0.clone(),
                id,
            }),
        })
    }

    fn kill_orphans(&self) -> BoxFut<'_, usize> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            *self.0.orphans.lock().expect("orphans") = Some(tx);
            if self.0.send(&ToLife::KillOrphans, &[]).is_err() {
                return 0;
            }
            tokio::time::timeout(Duration::from_secs(5), rx)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0)
        })
    }

    fn outside(&self, inside: &Path) -> PathBuf {
        in_root(
            Path::new(&format!("/proc/{}/root", self.0.pid)),
            inside,
            &|p| std::fs::read_link(p).ok(),
        )
    }
}

/// Where `path` of a tree whose root is `root` lies, seen from here: its symbolic links resolved
/// inside the tree (the life's `/var/run` is a link to `/run`, which read through
/// `/proc/<pid>/root` would lead to the container's own `/run`). A component that does not exist
/// yet is kept as it is; a link that loops ends the resolution where it is.
pub fn in_root(root: &Path, path: &Path, read_link: &dyn Fn(&Path) -> Option<PathBuf>) -> PathBuf {
    use std::path::Component;
    let mut todo: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut done: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            done.pop();
            continue;
        }
        done.push(name);
        let here: PathBuf = done.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        let Some(target) = read_link(&here) else {
            continue;
        };
        links += 1;
        if links > 40 {
            break;
        }
        done.pop();
        if target.is_absolute() {
            done.clear();
        }
        todo.extend(target.components().rev().filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        }));
    }
    done.iter().fold(root.to_path_buf(), |p, c| p.join(c))
}

#[cfg(test)]
mod tests {
    use super::in_root;
    use std::path::{Path, PathBuf};

    fn links(p: &Path) -> Option<PathBuf> {
        match p.to_str()? {
            "/r/var/run" => Some("/run".into()),
            "/r/etc/alt" => Some("../opt/x".into()),
            "/r/loop" => Some("loop".into()),
            _ => None,
        }
    }

    #[test]
    fn links_resolve_inside_the_root_never_out_of_it() {
        let r = Path::new("/r");
        assert_eq!(
            in_root(r, Path::new("/var/run/docker.sock"), &links),
            Path::new("/r/run/docker.sock")
        );
        assert_eq!(
            in_root(r, Path::new("/etc/alt/f"), &links),
            Path::new("/r/opt/x/f")
        );
        assert_eq!(
            in_root(r, Path::new("/../../etc/passwd"), &links),
            Path::new("/r/etc/passwd")
        );
        assert_eq!(
            in_root(r, Path::new("/plain/path"), &links),
            Path::new("/r/plain/path")
        );
        // A loop stops instead of spinning.
        let _ = in_root(r, Path::new("/loop/x"), &links);
    }
}
