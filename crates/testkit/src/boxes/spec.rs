//! What the host hands the hidden `box-init` and `box-exec` subcommands, as one JSON argument
//! each. Owns the wire format and the status lines `box-init` reports on; decides nothing.

use super::BoxKind;
use super::mounts::MountStep;
use super::tmpfs::TmpfsOptions;
use serde::{Deserialize, Serialize};
use std::os::fd::RawFd;
use std::path::PathBuf;

/// The box's first process: how to build the box around it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitSpec {
    pub kind: BoxKind,
    pub hostname: String,
    /// Host -> box: one byte `GO` once the maps and cgroups are ready, one byte `EXEC` once the
    /// host's extra setup ran. Inherited, then closed before anything else runs.
    pub ctl_fd: RawFd,
    /// Box -> host: status lines (see [`Status`]).
    pub status_fd: RawFd,
    /// Never written: its end of file means the host is gone, and the box is torn down.
    pub life_fd: RawFd,
    /// `cgroup.procs` files to join right after unsharing the cgroup namespace.
    pub join_after_unshare: Vec<PathBuf>,
    pub mounts: Vec<MountStep>,
    /// What PID 1 execs once the box is set up; `None`: the built-in init that only reaps.
    pub pid1: Option<Vec<String>>,
    /// PID 1's whole environment (`KEY=value`) and working directory, as a container's entrypoint
    /// gets them; `None`: PID 1 inherits box-init's environment and starts in `/`.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Join a pod sandbox's namespaces instead of making those.
    #[serde(default)]
    pub pod: Option<PodJoin>,
    /// Be a pod sandbox, not a box: hold the namespaces, mount nothing else, run nothing.
    #[serde(default)]
    pub sandbox: Option<SandboxSpec>,
}

/// The namespaces of a pod sandbox a container start joins: the user namespace (sysbox-like),
/// network, IPC and UTS, and its mount namespace, which the start copies (the copy holds the
/// sandbox's `/dev/shm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodJoin {
    /// Host pid of the sandbox.
    pub pid: i32,
    /// (`/proc/<pid>/ns/` name, inode it had when the sandbox started): a reused pid is refused.
    pub namespaces: Vec<(String, u64)>,
}

/// What a pod sandbox holds besides its namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// The directory the sandbox mounts the pod's `/dev/shm` tmpfs on, in its own mount namespace
    /// only (the host sees an empty directory).
    pub shm: PathBuf,
    pub shm_options: TmpfsOptions,
}

/// A command entering a running box.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Host pid of the box's PID 1: its namespaces are the box's.
    pub pid: i32,
    /// Inode of that process's pid namespace when the box started: a reused pid is refused.
    pub pid_ns: u64,
    /// Join the box's user namespace (sysbox-like boxes).
    pub userns: bool,
    pub cgroup_procs: Vec<PathBuf>,
}

pub const GO: u8 = b'g';
pub const EXEC: u8 = b'x';

/// One status line from `box-init` to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The first process has its user namespace (if any) and waits for maps and cgroups.
    Unshared,
    /// Host pid of the box's PID 1.
    Pid1(i32),
    /// PID 1 has mounted everything and waits for `EXEC`.
    Ready,
    Failed(String),
}

impl Status {
    pub fn line(&self) -> String {
        match self {
            Status::Unshared => "unshared\n".into(),
            Status::Pid1(p) => format!("pid1 {p}\n"),
            Status::Ready => "ready\n".into(),
            Status::Failed(m) => format!("failed {}\n", m.replace('\n', " ")),
        }
    }

    pub fn parse(line: &str) -> Option<Status> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "unshared" => Some(Status::Unshared),
            "pid1" => rest.trim().parse().ok().map(Status::Pid1),
            "ready" => Some(Status::Ready),
            "failed" => Some(Status::Failed(rest.to_owned())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_round_trip() {
        for s in [
            Status::Unshared,
            Status::Pid1(4242),
            Status::Ready,
            Status::Failed("mount /run: EPERM\nsecond line".into()),
        ] {
            let line = s.line();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            let back = Status::parse(line.trim_end()).unwrap();
            match (&s, &back) {
                (Status::Failed(a), Status::Failed(b)) => assert_eq!(a.replace('\n', " "), *b),
                _ => assert_eq!(s, back),
            }
        }
        assert_eq!(Status::parse("pid1 x"), None);
    }
}
