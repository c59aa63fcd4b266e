//! The life's init: `sysrunner life-init`, a fresh execution of sysrunner's binary that never sees
//! a credential (a fork of sysrunner would carry its memory, the token included, into the life).
//! Blocking and single-threaded, as namespaces want it. Two processes:
//!
//! 1. the **setup** process, in the container's PID namespace: takes the life's [`Setup`] from the
//!    control socket, joins the life's cgroup, unshares the mount, UTS, IPC, network and cgroup
//!    namespaces (the cgroup namespace's root is then the life's cgroup), moves into the life's
//!    leaf cgroup, unshares the PID namespace and forks the life's PID 1; it says that one's pid,
//!    waits for it and exits with its status, so that sysrunner's reaper learns when the life ends;
//! 2. the life's **PID 1**: builds the mount table (`super::mounts`), pivots into the life's root,
//!    and executes sysrunner's binary again from the life's own root (so that `/proc/1/exe` in the
//!    life is the life's copy of the file, not the container's), then serves the control socket:
//!    it spawns what sysrunner asks (dockerd, the runner) with the output pipes sysrunner sends,
//!    reports their exits, reaps every orphan, and kills the whole life when the socket closes.
//!
//! Owns these two processes and the life's namespaces; decides nothing about the life (the plan is
//! sysrunner's) and holds no secret.

use super::mounts;
use super::protocol::{CONTROL_FD, FromLife, MAX_MESSAGE, Setup, Status, ToLife};
use crate::process::Spec;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, killpg, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, send};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use std::collections::HashMap;
use std::ffi::CString;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn control() -> BorrowedFd<'static> {
    // SAFETY: the control socket is fd 3 for the whole life of both processes (sysrunner puts it
    // there; nothing here closes it but the setup process, which then stops using it).
    unsafe { BorrowedFd::borrow_raw(CONTROL_FD) }
}

fn say(m: &FromLife) {
    if let Ok(bytes) = serde_json::to_vec(m) {
        let _ = send(CONTROL_FD, &bytes, MsgFlags::empty());
    }
}

fn fail(step: &str, error: impl std::fmt::Display) -> i32 {
    say(&FromLife::Failed {
        step: step.into(),
        error: error.to_string(),
    });
    1
}

/// One message, and the descriptors that came with it. `None` at end of file.
fn receive() -> Result<Option<(ToLife, Vec<OwnedFd>)>, String> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let (len, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            CONTROL_FD,
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for c in msg.cmsgs().map_err(|e| e.to_string())? {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        // SAFETY: the kernel just gave us these descriptors; nothing else owns them.
                        fds.extend(raw.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                    }
                }
                break (msg.bytes, fds);
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.to_string()),
        }
    };
    if len == 0 {
        return Ok(None);
    }
    serde_json::from_slice(&buf[..len])
        .map(|m| Some((m, fds)))
        .map_err(|e| format!("bad message: {e}"))
}

/// `sysrunner life-init`: the setup process. Returns its exit code.
pub fn setup_main() -> i32 {
    let setup = match receive() {
        Ok(Some((ToLife::Setup(s), _))) => s,
        Ok(other) => return fail("setup", format!("expected the setup, got {other:?}")),
        Err(e) => return fail("setup", e),
    };
    for procs in &setup.cgroup_join {
        if let Err(e) = std::fs::write(procs, std::process::id().to_string()) {
            return fail(
                "join the life's cgroup",
                format!("{}: {e}", procs.display()),
            );
        }
    }
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWCGROUP;
    if let Err(e) = unshare(flags) {
        return fail("unshare the life's namespaces", e);
    }
    // Out of the cgroup namespace's root into its leaf: the root must hold no process, so that
    // sysrunner can enable controllers for dockerd's cgroups below it (cgroup v2). The paths are
    // the container's cgroupfs, still mounted here.
    for procs in &setup.cgroup_leaf {
        if let Err(e) = std::fs::write(procs, std::process::id().to_string()) {
            return fail(
                "enter the life's leaf cgroup",
                format!("{}: {e}", procs.display()),
            );
        }
    }
    if let Err(e) = nix::unistd::sethostname(&setup.hostname) {
        return fail("set the life's hostname", e);
    }
    if let Err(e) = unshare(CloneFlags::CLONE_NEWPID) {
        return fail("unshare the life's PID namespace", e);
    }
    // SAFETY: this process is single-threaded (a fresh exec that started no thread).
    match unsafe { fork() } {
        Err(e) => fail("fork the life's init", e),
        Ok(ForkResult::Child) => build(&setup),
        Ok(ForkResult::Parent { child }) => {
            say(&FromLife::Forked {
                pid: child.as_raw(),
            });
            // The life speaks for itself from now on; this process only waits for its end.
            // SAFETY: nothing else uses fd 3 in this process any more.
            drop(unsafe { OwnedFd::from_raw_fd(CONTROL_FD) });
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => return code,
                    Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
                    Err(Errno::EINTR) | Ok(_) => continue,
                    Err(_) => return 1,
                }
            }
        }
    }
}

/// The life's PID 1 before its exec: the mount table, the pivot, then the life's own binary.
fn build(setup: &Setup) -> i32 {
    if let Err((step, e)) = mounts::apply(&setup.steps) {
        return fail(&step, e);
    }
    // No output of the init reaches the container's log: a job is root here and could write to
    // the init's descriptors.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this single-threaded process.
            unsafe { nix::libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    let exe = match CString::new(setup.exe.as_os_str().as_encoded_bytes()) {
        Ok(e) => e,
        Err(e) => return fail("exec the life's init", e),
    };
    let args = [
        exe.clone(),
        CString::new("life-init").expect("no NUL"),
        CString::new("--pid1").expect("no NUL"),
    ];
    let env = [
        CString::new("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .expect("no NUL"),
    ];
    match nix::unistd::execve(&exe, &args, &env) {
        Err(e) => fail(
            "exec the life's init",
            format!("{}: {e}", setup.exe.display()),
        ),
        Ok(never) => match never {},
    }
}

/// `sysrunner life-init --pid1`: the life's PID 1, serving the control socket until it closes.
pub fn pid1_main() -> i32 {
    // The socket stays with this process only: what it spawns must not inherit it.
    // SAFETY: fcntl on a descriptor this process owns.
    unsafe { nix::libc::fcntl(CONTROL_FD, nix::libc::F_SETFD, nix::libc::FD_CLOEXEC) };
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&chld), None) {
        return fail("block SIGCHLD", e);
    }
    let sfd = match SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
        Ok(s) => s,
        Err(e) => return fail("signalfd", e),
    };
    say(&FromLife::Ready);
    let mut running: HashMap<i32, u64> = HashMap::new();
    loop {
        let mut fds = [
            PollFd::new(control(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
        let control_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let child_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
        if child_ready {
            while let Ok(Some(_)) = sfd.read_signal() {}
            reap(&mut running);
        }
        if control_ready {
            match receive() {
                Ok(Some((m, fds))) => handle(m, fds, &mut running, &chld),
                // sysrunner closed the socket (or is gone): the life ends.
                Ok(None) | Err(_) => break,
            }
        }
    }
    // From PID 1, kill(-1) reaches every other process of the life's PID namespace; when PID 1
    // exits the kernel kills whatever is left anyway.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    0
}

fn reap(running: &mut HashMap<i32, u64>) {
    loop {
        let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, Status::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Status::Signal(sig as i32)),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return,
        };
        if let Some(id) = running.remove(&pid.as_raw()) {
            say(&FromLife::Exited { id, status });
        }
    }
}

fn handle(m: ToLife, fds: Vec<OwnedFd>, running: &mut HashMap<i32, u64>, mask: &SigSet) {
    match m {
        ToLife::Spawn { id, spec } => match spawn(&spec, fds, mask) {
            Ok(pid) => {
                running.insert(pid.as_raw(), id);
                say(&FromLife::Spawned { id });
            }
            Err(e) => say(&FromLife::SpawnFailed { id, error: e }),
        },
        ToLife::Signal { id, signal, group } => {
            let Some((&pid, _)) = running.iter().find(|(_, v)| **v == id) else {
                return;
            };
            let Ok(sig) = Signal::try_from(signal) else {
                return;
            };
            let pid = Pid::from_raw(pid);
            let _ = if group {
                killpg(pid, sig)
            } else {
                kill(pid, sig)
            };
        }
        ToLife::KillOrphans => {
            let count = kill_orphans(running);
            say(&FromLife::OrphansKilled { count });
        }
        ToLife::Setup(_) => {}
    }
}

/// Every process of the life but this one and those spawned and still running: what dockerd left.
fn kill_orphans(running: &HashMap<i32, u64>) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        if pid != 1
            && !running.contains_key(&pid)
            && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
        {
            n += 1;
        }
    }
    n
}

fn spawn(spec: &Spec, fds: Vec<OwnedFd>, mask: &SigSet) -> Result<Pid, String> {
    let [stdout, stderr]: [OwnedFd; 2] = fds
        .try_into()
        .map_err(|_| "a spawn comes with its two output pipes".to_string())?;
    let cstr = |s: &str| CString::new(s).map_err(|e| e.to_string());
    let program =
        CString::new(spec.program.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    let mut args = vec![program.clone()];
    for a in &spec.args {
        args.push(cstr(a)?);
    }
    let env: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    let cwd = match &spec.cwd {
        Some(c) => Some(CString::new(c.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?),
        None => None,
    };
    let null = std::fs::OpenOptions::new()
        .read(true)
        .open("/dev/null")
        .map_err(|e| e.to_string())?;
    // SAFETY: single-threaded; the child only makes system calls before execve.
    match unsafe { fork() }.map_err(|e| e.to_string())? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            let code = exec_child(
                &program,
                &args,
                &env,
                cwd.as_deref(),
                spec,
                &stdout,
                &stderr,
                &null,
                mask,
            );
            // Only reached when the exec failed.
            // SAFETY: _exit in a forked child, without running the parent's destructors.
            unsafe { nix::libc::_exit(code) }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn exec_child(
    program: &CString,
    args: &[CString],
    env: &[CString],
    cwd: Option<&std::ffi::CStr>,
    spec: &Spec,
    stdout: &OwnedFd,
    stderr: &OwnedFd,
    null: &std::fs::File,
    mask: &SigSet,
) -> i32 {
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(mask), None);
    // Its own process group, so that a stop can kill the group.
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    // SAFETY: dup2 onto the standard descriptors, in the forked child before exec.
    unsafe {
        nix::libc::dup2(null.as_raw_fd(), 0);
        nix::libc::dup2(stdout.as_raw_fd(), 1);
        nix::libc::dup2(stderr.as_raw_fd(), 2);
    }
    if let Some(c) = cwd
        && nix::unistd::chdir(c).is_err()
    {
        return 127;
    }
    if let Some(u) = &spec.user {
        let groups: Vec<nix::unistd::Gid> = u
            .groups
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        if nix::unistd::setgroups(&groups).is_err()
            || nix::unistd::setgid(nix::unistd::Gid::from_raw(u.gid)).is_err()
            || nix::unistd::setuid(nix::unistd::Uid::from_raw(u.uid)).is_err()
        {
            return 126;
        }
    }
    let _ = nix::unistd::execve(program, args, env);
    127
}
