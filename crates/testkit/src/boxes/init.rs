//! The hidden `box-init` subcommand: a box's first process. It creates the namespaces in the order
//! the kernel needs (user first, cgroup once the host has moved it, then the rest), forks the
//! box's PID 1 (which mounts the box's private paths, brings `lo` up, then execs the caller's
//! program or stays as an init that only reaps), and supervises PID 1 until it exits or the host
//! goes away. Runs single-threaded in a fresh process; changes only the namespaces it creates.

use super::BoxKind;
use super::cgroup::{self, HostFs};
use super::mounts;
use super::spec::{EXEC, GO, InitSpec, PodJoin, SandboxSpec, Status};
use super::sys::{self, adopt, loopback_up, pidfd_open, read_byte};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork, setgroups, sethostname, setresgid, setresuid};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::exit;

/// Exit code when box-init itself failed (before PID 1 ran anything of the caller's).
pub const FAILED: i32 = 125;

/// The signals the supervisor forwards to PID 1.
const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

pub fn main(spec_json: &str) -> ! {
    let spec: InitSpec = match serde_json::from_str(spec_json) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sysrunner box-init: bad spec: {e}");
            exit(FAILED)
        }
    };
    let adopt_all = || -> std::io::Result<(OwnedFd, OwnedFd, OwnedFd)> {
        // SAFETY: the host passed exactly these three descriptors; nothing else here owns them.
        unsafe {
            Ok((
                adopt(spec.ctl_fd)?,
                adopt(spec.status_fd)?,
                adopt(spec.life_fd)?,
            ))
        }
    };
    let (ctl, status, life) = match adopt_all() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sysrunner box-init: inherited descriptors: {e}");
            exit(FAILED)
        }
    };
    exit(outer(&spec, ctl, status, life))
}

fn send(fd: &OwnedFd, s: &Status) -> Result<(), String> {
    sys::write_all(fd.as_fd(), s.line().as_bytes()).map_err(|e| format!("report to host: {e}"))
}

fn ctx<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}

/// The first process's whole life; returns its exit code (PID 1's, or [`FAILED`]).
fn outer(spec: &InitSpec, ctl: OwnedFd, status: OwnedFd, life: OwnedFd) -> i32 {
    let fail = |msg: String| {
        let _ = send(&status, &Status::Failed(msg.clone()));
        eprintln!("sysrunner box-init: {msg}");
        FAILED
    };
    if let Some(sb) = &spec.sandbox {
        return match sandbox(spec, sb, &ctl, &status, &life) {
            Ok(()) => 0,
            Err(e) => fail(e),
        };
    }
    if let Err(e) = make_namespaces(spec, &ctl, &status) {
        return fail(e);
    }
    // Blocked before fork so that no signal meant for PID 1 is lost; PID 1 restores the mask.
    let mut forwarded = SigSet::empty();
    for s in FORWARDED {
        forwarded.add(s);
    }
    let old_mask = match forwarded.thread_swap_mask(SigmaskHow::SIG_BLOCK) {
        Ok(m) => m,
        Err(e) => return fail(format!("sigprocmask: {e}")),
    };
    // SAFETY: this process is single-threaded (a fresh exec of our binary that started no
    // threads), so the child may do anything after fork.
    match unsafe { fork() } {
        Err(e) => fail(format!("fork PID 1: {e}")),
        Ok(ForkResult::Child) => {
            drop(life);
            pid1(spec, ctl, status, old_mask)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(ctl);
            if let Err(e) = send(&status, &Status::Pid1(child.as_raw())) {
                let _ = kill(child, Signal::SIGKILL);
                return fail(e);
            }
            drop(status);
            supervise(child, life, &forwarded).unwrap_or_else(|e| {
                eprintln!("sysrunner box-init: {e}");
                let _ = kill(child, Signal::SIGKILL);
                FAILED
            })
        }
    }
}

/// Everything before PID 1 exists: user namespace and handshake, cgroup namespace, the rest (or
/// a pod sandbox's namespaces, joined).
fn make_namespaces(spec: &InitSpec, ctl: &OwnedFd, status: &OwnedFd) -> Result<(), String> {
    let sysbox = spec.kind == BoxKind::SysboxLike;
    // Opened first, while /proc is still the host's.
    let pod = spec.pod.as_ref().map(open_pod).transpose()?;
    if sysbox && pod.is_none() {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(ctx("unshare user namespace"))?;
    }
    send(status, &Status::Unshared)?;
    match read_byte(ctl.as_fd()).map_err(ctx("wait for the host"))? {
        Some(GO) => {}
        _ => return Err("the host went away before the box's cgroups were ready".into()),
    }
    if let Some(ns) = &pod {
        join(ns, &["user"])?;
    }
    if sysbox {
        // The host has written the maps (or the pod's namespace has them): become the
        // namespace's root. The host's supplementary groups are unmapped here (they would show
        // as nogroup), so drop them first.
        setgroups(&[]).map_err(ctx("setgroups"))?;
        let root_g = Gid::from_raw(0);
        setresgid(root_g, root_g, root_g).map_err(ctx("setresgid 0"))?;
        let root_u = Uid::from_raw(0);
        setresuid(root_u, root_u, root_u).map_err(ctx("setresuid 0"))?;
    }
    // The host has moved this process into the box's cgroups: they become the namespace's root.
    unshare(CloneFlags::CLONE_NEWCGROUP).map_err(ctx("unshare cgroup namespace"))?;
    cgroup::join(&HostFs, &spec.join_after_unshare, 0).map_err(|e| e.to_string())?;
    match &pod {
        None => unshare(
            CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWNET
                | CloneFlags::CLONE_NEWUTS
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWPID,
        )
        .map_err(ctx("unshare mount, net, uts, ipc and pid namespaces"))?,
        Some(ns) => {
            // The pod's mount namespace is joined only to be copied: the start's own mount
            // namespace begins as the sandbox's, with the pod's /dev/shm mounted in it.
            join(ns, &["net", "ipc", "uts", "mnt"])?;
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID)
                .map_err(ctx("unshare mount and pid namespaces"))?;
        }
    }
    sethostname(&spec.hostname).map_err(ctx("sethostname"))
}

/// The sandbox's namespace files, checked against the inodes the host recorded.
fn open_pod(p: &PodJoin) -> Result<Vec<(String, File)>, String> {
    let mut out = Vec::new();
    for (name, want) in &p.namespaces {
        let path = format!("/proc/{}/ns/{name}", p.pid);
        let f = File::open(&path)
            .map_err(|e| format!("open {path}: {e} (is the pod's sandbox gone?)"))?;
        let got = f.metadata().map_err(|e| format!("stat {path}: {e}"))?.ino();
        if got != *want {
            return Err(format!(
                "{path} is namespace {got}, not the pod's {want}: the sandbox is gone"
            ));
        }
        out.push((name.clone(), f));
    }
    Ok(out)
}

/// setns into each of `which` that the pod holds, in that order.
fn join(ns: &[(String, File)], which: &[&str]) -> Result<(), String> {
    for want in which {
        let Some((_, f)) = ns.iter().find(|(n, _)| n == want) else {
            continue;
        };
        let flag = match *want {
            "user" => CloneFlags::CLONE_NEWUSER,
            "net" => CloneFlags::CLONE_NEWNET,
            "ipc" => CloneFlags::CLONE_NEWIPC,
            "uts" => CloneFlags::CLONE_NEWUTS,
            "mnt" => CloneFlags::CLONE_NEWNS,
            other => return Err(format!("no such namespace to join: {other}")),
        };
        nix::sched::setns(f, flag).map_err(|e| format!("setns {want} of the pod: {e}"))?;
    }
    Ok(())
}

/// A pod sandbox's whole life, Kubernetes' pause container: it makes the namespaces a pod's
/// containers share (user when sysbox-like, network, IPC, UTS) and a mount namespace that holds
/// the pod's `/dev/shm`, reports ready, and holds them until the host's end of the life pipe
/// closes. It runs nothing and has no pid namespace of its own.
fn sandbox(
    spec: &InitSpec,
    sb: &SandboxSpec,
    ctl: &OwnedFd,
    status: &OwnedFd,
    life: &OwnedFd,
) -> Result<(), String> {
    let sysbox = spec.kind == BoxKind::SysboxLike;
    if sysbox {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(ctx("unshare user namespace"))?;
    }
    send(status, &Status::Unshared)?;
    match read_byte(ctl.as_fd()).map_err(ctx("wait for the host"))? {
        Some(GO) => {}
        _ => return Err("the host went away before the maps were written".into()),
    }
    if sysbox {
        setgroups(&[]).map_err(ctx("setgroups"))?;
        let root_g = Gid::from_raw(0);
        setresgid(root_g, root_g, root_g).map_err(ctx("setresgid 0"))?;
        let root_u = Uid::from_raw(0);
        setresuid(root_u, root_u, root_u).map_err(ctx("setresuid 0"))?;
    }
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC,
    )
    .map_err(ctx("unshare mount, net, uts and ipc namespaces"))?;
    sethostname(&spec.hostname).map_err(ctx("sethostname"))?;
    mounts::apply(&[
        mounts::MountStep::MakeRprivate,
        mounts::MountStep::Tmpfs {
            target: sb.shm.clone(),
            options: sb.shm_options.clone(),
        },
    ])?;
    loopback_up().map_err(ctx("lo up"))?;
    send(status, &Status::Ready)?;
    // Only end of file (the host is gone or let go) ends the pod.
    while let Ok(Some(_)) = read_byte(life.as_fd()) {}
    Ok(())
}

fn pid1(spec: &InitSpec, ctl: OwnedFd, status: OwnedFd, old_mask: SigSet) -> ! {
    let setup = || -> Result<(), String> {
        // The supervisor is this box's anchor: if it dies, the box goes with it.
        set_pdeathsig(Signal::SIGKILL).map_err(ctx("PR_SET_PDEATHSIG"))?;
        mounts::apply(&spec.mounts)?;
        loopback_up().map_err(ctx("lo up"))?;
        Ok(())
    };
    if let Err(e) = setup() {
        let _ = send(&status, &Status::Failed(e));
        exit(FAILED);
    }
    if send(&status, &Status::Ready).is_err() {
        exit(FAILED);
    }
    drop(status);
    match read_byte(ctl.as_fd()) {
        Ok(Some(EXEC)) => {}
        _ => exit(FAILED),
    }
    drop(ctl);
    match &spec.pid1 {
        Some(argv) => {
            let _ = old_mask.thread_set_mask();
            let err = match &spec.env {
                Some(env) => exec_as_entrypoint(argv, env, spec.cwd.as_deref()),
                None => exec(argv),
            };
            eprintln!("sysrunner box-init: exec {argv:?}: {err}");
            exit(if err == nix::errno::Errno::ENOENT {
                127
            } else {
                126
            })
        }
        None => reaper(),
    }
}

/// `execvp`; returns only on failure.
pub(crate) fn exec<S: AsRef<[u8]>>(argv: &[S]) -> nix::errno::Errno {
    let args: Result<Vec<CString>, _> = argv.iter().map(|a| CString::new(a.as_ref())).collect();
    match args {
        Ok(args) if !args.is_empty() => match nix::unistd::execvp(&args[0], &args) {
            Err(e) => e,
            Ok(never) => match never {},
        },
        _ => nix::errno::Errno::EINVAL,
    }
}

/// Execs `argv` with exactly `env`, in `cwd` (default `/`), as runc starts a container's
/// entrypoint: a bare program name is looked up in the PATH of `env`, not in box-init's.
/// Returns only on failure.
fn exec_as_entrypoint(argv: &[String], env: &[String], cwd: Option<&Path>) -> nix::errno::Errno {
    if let Err(e) = nix::unistd::chdir(cwd.unwrap_or(Path::new("/"))) {
        return e;
    }
    let Some(program) = argv.first() else {
        return nix::errno::Errno::EINVAL;
    };
    let path = if program.contains('/') {
        program.clone()
    } else {
        let search = env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or(super::DEFAULT_PATH);
        let found = search
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(program))
            .find(|p| {
                p.is_file()
                    && nix::unistd::access(p.as_path(), nix::unistd::AccessFlags::X_OK).is_ok()
            });
        match found {
            Some(p) => p.to_string_lossy().into_owned(),
            None => return nix::errno::Errno::ENOENT,
        }
    };
    let c = |v: &[String]| -> Result<Vec<CString>, nix::errno::Errno> {
        v.iter()
            .map(|s| CString::new(s.as_bytes()).map_err(|_| nix::errno::Errno::EINVAL))
            .collect()
    };
    let (Ok(path), Ok(args), Ok(envp)) = (
        CString::new(path.into_bytes()).map_err(|_| nix::errno::Errno::EINVAL),
        c(argv),
        c(env),
    ) else {
        return nix::errno::Errno::EINVAL;
    };
    match nix::unistd::execve(&path, &args, &envp) {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

/// The built-in PID 1: reaps whatever is reparented to it and leaves on SIGTERM, SIGINT or
/// SIGHUP. The kernel drops signals to a pid namespace's init that has no handler unless they are
/// blocked, so they are blocked and taken with sigwait.
fn reaper() -> ! {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        exit(FAILED);
    }
    loop {
        while let Ok(st) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            if st == WaitStatus::StillAlive {
                break;
            }
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            Ok(_) => exit(0),
        }
    }
}

/// Waits for PID 1, forwarding signals to it; kills it when the host's end of the life pipe
/// closes (the host tears the box down, or died). Returns PID 1's exit code, 128+signal if killed.
fn supervise(child: Pid, life: OwnedFd, forwarded: &SigSet) -> Result<i32, String> {
    let pidfd = pidfd_open(child.as_raw()).map_err(ctx("pidfd_open PID 1"))?;
    let sfd = SignalFd::with_flags(forwarded, SfdFlags::SFD_CLOEXEC).map_err(ctx("signalfd"))?;
    let mut life = Some(life);
    loop {
        let (exited, signalled, host_gone) = {
            let mut fds = vec![
                PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(l) = &life {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("poll: {e}")),
                Ok(_) => {}
            }
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(|f| f.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            (ready(0), ready(1), ready(2))
        };
        if exited {
            return match waitpid(child, None).map_err(ctx("waitpid PID 1"))? {
                WaitStatus::Exited(_, code) => Ok(code),
                WaitStatus::Signaled(_, sig, _) => Ok(128 + sig as i32),
                _ => continue,
            };
        }
        if signalled {
            if let Ok(Some(info)) = sfd.read_signal() {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                    let _ = kill(child, sig);
                }
            }
        }
        if host_gone {
            // Killing a pid namespace's init kills every process in it.
            let _ = kill(child, Signal::SIGKILL);
            life = None;
        }
    }
}
