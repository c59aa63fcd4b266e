//! The hidden `sysrunner-testkit bench-dockerd`: the limit's bare dockerd, started and timed from
//! inside the box, so that no `box-exec` (a few tens of milliseconds each on a loaded 2-core
//! machine) stands between its spawns, as none stands between sysrunner's. Spawns containerd
//! (when given), polls for its socket every millisecond, spawns dockerd, polls `/_ping` every
//! millisecond, then stops both with SIGTERM; prints one JSON line of [`Timed`]. Waits for its
//! own children: it is a short-lived driver, not an init.

use crate::exit::Exit;
use clap::{Arg, ArgMatches, Command};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub const COMMAND: &str = "bench-dockerd";

/// What one bare start measured, in milliseconds from containerd's spawn (dockerd's, when it
/// starts its own).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timed {
    /// When the first spawn happened, in nanoseconds since the epoch: dockerd's log lines are
    /// placed against it.
    pub started_unix_ns: u128,
    pub containerd_listening_ms: Option<f64>,
    pub ready_ms: f64,
    /// From SIGTERM to dockerd's exit, then containerd's.
    pub stop_ms: f64,
}

pub fn command() -> Command {
    let path = |name: &'static str| {
        Arg::new(name)
            .long(name)
            .value_name("PATH")
            .value_parser(clap::value_parser!(PathBuf))
    };
    Command::new(COMMAND)
        .hide(true)
        .about("Start and time a bare dockerd from inside a box (the bench's limit)")
        .arg(path("dockerd").required(true))
        .arg(path("config").required(true))
        .arg(path("socket").required(true))
        .arg(path("log").required(true))
        .arg(path("containerd").requires_all(["containerd-config", "containerd-socket"]))
        .arg(path("containerd-config"))
        .arg(path("containerd-socket"))
        .arg(path("containerd-log"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn spawn(program: &Path, args: &[&str], log: &Path) -> Result<Child, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", program.display()))
}

/// Polls `ready` every millisecond until it holds, `child` exits or a minute passes.
fn until(child: &mut Child, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(s)) = child.try_wait() {
            return Err(format!("exited first ({s})"));
        }
        if Instant::now() > end {
            return Err("not ready within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn stop(child: &mut Child) -> Duration {
    let t = Instant::now();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    let _ = child.wait();
    t.elapsed()
}

fn timed(m: &ArgMatches) -> Result<Timed, String> {
    let path = |n: &str| m.get_one::<PathBuf>(n).cloned();
    let (dockerd, config, socket, log) = (
        path("dockerd").expect("required"),
        path("config").expect("required"),
        path("socket").expect("required"),
        path("log").expect("required"),
    );
    let started_unix_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let t = Instant::now();
    let mut containerd = None;
    let mut containerd_listening_ms = None;
    if let Some(bin) = path("containerd") {
        let (cfg, sock) = (
            path("containerd-config").expect("required with --containerd"),
            path("containerd-socket").expect("required with --containerd"),
        );
        let clog = path("containerd-log").unwrap_or_else(|| log.with_extension("containerd.log"));
        let mut c = spawn(&bin, &["--config", &cfg.to_string_lossy()], &clog)?;
        until(&mut c, || sock.exists()).map_err(|e| format!("containerd: {e}"))?;
        containerd_listening_ms = Some(ms(t.elapsed()));
        containerd = Some(c);
    }
    let mut d = spawn(
        &dockerd,
        &["--config-file", &config.to_string_lossy()],
        &log,
    )?;
    let ready = until(&mut d, || crate::docker::ping(&socket)).map(|()| ms(t.elapsed()));
    let stopped = stop(&mut d) + containerd.as_mut().map(stop).unwrap_or_default();
    Ok(Timed {
        started_unix_ns,
        containerd_listening_ms,
        ready_ms: ready.map_err(|e| format!("dockerd: {e}"))?,
        stop_ms: ms(stopped),
    })
}

/// `sysrunner-testkit bench-dockerd`.
pub fn run(m: &ArgMatches) -> Exit {
    match timed(m) {
        Ok(t) => {
            println!("{}", serde_json::to_string(&t).expect("serialises"));
            Exit::Ok
        }
        Err(e) => {
            eprintln!("sysrunner-testkit {COMMAND}: {e}");
            Exit::Internal
        }
    }
}
