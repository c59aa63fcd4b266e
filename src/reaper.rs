//! The one place that calls `waitpid`. Children are spawned through the reaper, which records who
//! owns each pid before the child can exit; every exit status goes to its owner, and the statuses
//! of orphans (processes re-parented to us as PID 1 or child subreaper) are discarded, so an
//! orphan's exit can never be mistaken for the listener's. Nothing else in sysrunner may wait for a
//! child: not `std::process::Child::wait`, not `tokio::process`.

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::process::Command;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Code(c) => Some(c),
            ExitStatus::Signal(_) => None,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

type Owners = HashMap<i32, oneshot::Sender<ExitStatus>>;

/// A child spawned through the reaper: its pid, its pipes, and the status its exit will deliver.
pub struct Child {
    pub pid: Pid,
    pub stdout: Option<std::process::ChildStdout>,
    pub stderr: Option<std::process::ChildStderr>,
    pub stdin: Option<std::process::ChildStdin>,
    pub exit: oneshot::Receiver<ExitStatus>,
}

#[derive(Clone)]
pub struct Reaper {
    owners: Arc<Mutex<Owners>>,
    orphans: Arc<std::sync::atomic::AtomicU64>,
}

impl Reaper {
    /// Starts reaping on SIGCHLD. Needs a tokio runtime. Makes this process a child subreaper
    /// unless it is PID 1 already, so grandchildren whose parent dies are ours to reap.
    pub fn start() -> io::Result<Reaper> {
        if std::process::id() != 1 {
            nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
        }
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let reaper = Reaper {
            owners: Arc::new(Mutex::new(HashMap::new())),
            orphans: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        };
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_ready();
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok(reaper)
    }

    /// Spawns `cmd` and records its owner in one step: the owners lock is held across fork, and
    /// reaping takes the same lock, so the child cannot be reaped before its owner is known.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Child> {
        let mut owners = self.owners.lock().expect("reaper lock");
        let mut child = cmd.spawn()?;
        let pid = Pid::from_raw(child.id() as i32);
        let (tx, rx) = oneshot::channel();
        owners.insert(pid.as_raw(), tx);
        Ok(Child {
            pid,
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            stdin: child.stdin.take(),
            exit: rx,
        })
    }

    /// How many orphans were reaped and discarded so far.
    pub fn orphans_reaped(&self) -> u64 {
        self.orphans.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reaps every child that has exited; never blocks.
    fn reap_ready(&self) {
        let mut owners = self.owners.lock().expect("reaper lock");
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("waitpid: {e}");
                    return;
                }
            };
            match owners.remove(&pid.as_raw()) {
                // The owner may have stopped listening; the status is then simply dropped.
                Some(tx) => {
                    let _ = tx.send(status);
                }
                None => {
                    self.orphans
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(pid = pid.as_raw(), "reaped orphan ({status})");
                }
            }
        }
    }
}

/// A process's parent, from `/proc/PID/stat` (field 4). The command name may contain spaces and
/// parentheses, so the fields are split after its last ')'.
fn parent_of(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}

/// Our children that nobody spawned through the reaper: orphans re-parented to us. Read from
/// `/proc/*/stat` (field 4 is the parent pid).
pub fn orphan_children(reaper: &Reaper) -> Vec<Pid> {
    let me = std::process::id() as i32;
    let owners = reaper.owners.lock().expect("reaper lock");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !owners.contains_key(pid))
        .filter(|pid| parent_of(*pid) == Some(me))
        .map(Pid::from_raw)
        .collect()
}

/// Kills every orphan child until none is left (a killed shim re-parents its container's init to
/// us; killing that init ends its whole pid namespace). Bounded: gives up after `limit`, which
/// a loaded machine reaping a deep tree of shims and containers can need seconds of.
pub async fn kill_orphans(reaper: &Reaper, limit: std::time::Duration) -> usize {
    let end = std::time::Instant::now() + limit;
    let mut killed = 0;
    loop {
        let orphans = orphan_children(reaper);
        if orphans.is_empty() || std::time::Instant::now() >= end {
            break;
        }
        for pid in orphans {
            if kill(pid, Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    killed
}

/// Every child we have, owned or not: the last resort when a stop runs out of time.
pub fn kill_all_children() -> usize {
    kill_all_children_but(&[])
}

/// [`kill_all_children`] but the processes `keep` (the life sandbox's, which ends in its own
/// order).
pub fn kill_all_children_but(keep: &[i32]) -> usize {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        if parent_of(pid) == Some(me) && !keep.contains(&pid) {
            let _ = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                n += 1;
            }
        }
    }
    n
}
