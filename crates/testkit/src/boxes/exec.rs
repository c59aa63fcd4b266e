//! The hidden `box-exec` subcommand: runs one command inside a running box. Joins the box's
//! cgroups, enters its namespaces (user first, so the others are entered with the box root's
//! capabilities), forks so that the command lands in the box's pid namespace, forwards signals
//! to it, and exits the way it exited. Changes nothing outside the box.
//!
//! Exit codes besides the command's own: 125 box-exec itself failed, 126 the command could not
//! be executed, 127 it was not found; a command killed by a signal kills box-exec with the same.

use super::cgroup::{self, HostFs};
use super::init::exec;
use super::spec::ExecSpec;
use nix::sched::{CloneFlags, setns};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, kill, raise, signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork, getppid, setgroups, setresgid, setresuid};
use std::convert::Infallible;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::process::exit;

const FAILED: i32 = 125;

/// The signals passed on to the command; SIGKILL cannot be, so the command also gets
/// PR_SET_PDEATHSIG(SIGKILL) and dies with box-exec.
const FORWARDED: [Signal; 8] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

pub fn main(spec_json: &str, argv: &[OsString]) -> ! {
    let result = serde_json::from_str::<ExecSpec>(spec_json)
        .map_err(|e| format!("bad spec: {e}"))
        .and_then(|spec| run(&spec, argv));
    match result {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("sysrunner box-exec: {e}");
            exit(FAILED)
        }
    }
}

fn run(spec: &ExecSpec, argv: &[OsString]) -> Result<Infallible, String> {
    if argv.is_empty() {
        return Err("no command".into());
    }
    let cwd = std::env::current_dir().ok();
    // Every namespace file is opened first: inside the box's mount namespace /proc is the box's
    // own, where the host pid means nothing.
    let open = |ns: &str| {
        File::open(format!("/proc/{}/ns/{ns}", spec.pid)).map_err(|e| {
            format!(
                "open /proc/{}/ns/{ns}: {e} (is the box still running?)",
                spec.pid
            )
        })
    };
    let pid_ns = open("pid")?;
    let ino = pid_ns
        .metadata()
        .map_err(|e| format!("stat pid namespace: {e}"))?
        .ino();
    if ino != spec.pid_ns {
        return Err(format!(
            "pid {} is no longer the box's PID 1 (pid namespace {ino}, expected {})",
            spec.pid, spec.pid_ns
        ));
    }
    let user = if spec.userns {
        Some(open("user")?)
    } else {
        None
    };
    let mut others = Vec::new();
    for (name, flag) in [
        ("mnt", CloneFlags::CLONE_NEWNS),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
    ] {
        others.push((name, open(name)?, flag));
    }

    // Into the box's cgroups while still the host's root: a later cleanup finds this process there.
    cgroup::join(&HostFs, &spec.cgroup_procs, 0).map_err(|e| e.to_string())?;
    if let Some(user) = user {
        setns(&user, CloneFlags::CLONE_NEWUSER).map_err(|e| format!("setns user: {e}"))?;
        setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
        let g = Gid::from_raw(0);
        setresgid(g, g, g).map_err(|e| format!("setresgid 0: {e}"))?;
        let u = Uid::from_raw(0);
        setresuid(u, u, u).map_err(|e| format!("setresuid 0: {e}"))?;
    }
    for (name, file, flag) in &others {
        setns(file, *flag).map_err(|e| format!("setns {name}: {e}"))?;
    }
    setns(&pid_ns, CloneFlags::CLONE_NEWPID).map_err(|e| format!("setns pid: {e}"))?;
    // Entering a mount namespace moves the working directory to its root; keep the caller's by
    // name when the box has it.
    if cwd
        .as_deref()
        .is_none_or(|d| std::env::set_current_dir(d).is_err())
    {
        std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    }

    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(s);
    }
    let old = set
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .map_err(|e| format!("sigprocmask: {e}"))?;
    // SAFETY: box-exec is single-threaded (a fresh exec of our binary that started no threads).
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let _ = set_pdeathsig(Signal::SIGKILL);
            // box-exec may have died before PDEATHSIG was armed; the command must not outlive it.
            // Its parent lives outside the box's pid namespace, where getppid() reads 0; an
            // orphan would read 1 (the box's PID 1).
            if getppid() != Pid::from_raw(0) {
                exit(FAILED);
            }
            let _ = old.thread_set_mask();
            let args: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
            let err = exec(&args);
            eprintln!("sysrunner box-exec: {}: {err}", argv[0].to_string_lossy());
            exit(if err == nix::errno::Errno::ENOENT {
                127
            } else {
                126
            })
        }
        ForkResult::Parent { child } => loop {
            match set.wait() {
                Ok(Signal::SIGCHLD) | Err(_) => {}
                Ok(sig) => {
                    let _ = kill(child, sig);
                    continue;
                }
            }
            match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => exit(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => die_like(sig),
                _ => {}
            }
        },
    }
}

/// Ends this process by the signal that ended the command, so the caller's `ExitStatus` shows it.
fn die_like(sig: Signal) -> ! {
    // SAFETY: restoring the default action; no handler is installed.
    let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    let mut only = SigSet::empty();
    only.add(sig);
    let _ = only.thread_unblock();
    let _ = raise(sig);
    exit(128 + sig as i32)
}
