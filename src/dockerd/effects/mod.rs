//! The effects that carry out a dockerd plan before dockerd starts: pre-steps, stale pid files and
//! sockets, the ephemeral data root, daemon.json, the iptables backend. Every effect goes through
//! [`System`], so tests record them, including the cgroup v2 steps a cgroup v1 machine cannot run.
//! Does only what the plan says; decides nothing, and never touches a live dockerd's files.

use super::plan::{self, Plan, PreStep};
use crate::config::DataPolicy;
use crate::trash::Trash;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file system and kernel calls `prepare` makes.
pub trait System {
    fn read(&self, path: &Path) -> io::Result<String>;
    fn write(&self, path: &Path, contents: &str) -> io::Result<()>;
    fn mkdir_all(&self, path: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Takes everything inside `dir` except the names in `keep` out of it at once: into the
    /// trash [`TRASH_DIR`] inside it (a rename each, however much an earlier life left), which a
    /// thread of its own empties beside dockerd's start. `dir` itself stays (it may be a mount
    /// point); so does the trash, which `keep` must name.
    fn empty_dir(&self, dir: &Path, keep: &[&str]) -> io::Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    fn mount_securityfs(&self) -> io::Result<()>;
    fn make_rshared_root(&self) -> io::Result<()>;
    /// The command name of a live process, `None` if there is no such process.
    fn process_name(&self, pid: i32) -> Option<String>;
    fn sleep(&self, d: Duration);
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(
        "{what} is still running (pid {pid}, from {pidfile}): another dockerd uses this container's /var/run"
    )]
    AlreadyRunning {
        what: &'static str,
        pid: i32,
        pidfile: String,
    },
    #[error("{step}: {source}")]
    Step {
        step: String,
        #[source]
        source: io::Error,
    },
}

fn step(step: impl Into<String>) -> impl FnOnce(io::Error) -> PrepareError {
    let step = step.into();
    move |source| PrepareError::Step { step, source }
}

/// The name of the lock file in the data root: kept when the data root is emptied.
pub const LOCK_FILE: &str = ".sysrunner.lock";
/// The trash in the data root: what an earlier life left there goes into it when the data root is
/// emptied (DOCKER_DATA=ephemeral), and is deleted off dockerd's path.
pub const TRASH_DIR: &str = ".sysrunner-trash";

/// How often the cgroup v2 nesting is retried while processes race into the root cgroup.
const NEST_ATTEMPTS: u32 = 20;

pub fn prepare(
    plan: &Plan,
    data: DataPolicy,
    sys: &dyn System,
) -> Result<Vec<String>, PrepareError> {
    let mut log = Vec::new();
    for s in &plan.pre_steps {
        match s {
            PreStep::MountSecurityfs => match sys.mount_securityfs() {
                Ok(()) => log.push("mounted securityfs".into()),
                // As moby's hack/dind: AppArmor may be absent, and dockerd copes.
                Err(e) => log.push(format!("securityfs not mounted ({e}); continuing")),
            },
            PreStep::NestCgroupV2 { into, controllers } => {
                let n = nest_cgroup_v2(Path::new(into), controllers, sys)?;
                log.push(format!(
                    "moved processes into {into} and enabled {} controllers ({n} attempts)",
                    controllers.len()
                ));
            }
            PreStep::MakeRshared => {
                sys.make_rshared_root()
                    .map_err(step("mount --make-rshared /"))?;
                log.push("made / rshared".into());
            }
        }
    }

    for (what, pidfile, socket) in [
        ("dockerd", plan::PID_FILE, Some(plan::SOCKET)),
        (
            "containerd",
            plan::CONTAINERD_PID_FILE,
            Some(plan::CONTAINERD_SOCKET),
        ),
    ] {
        remove_stale(
            what,
            Path::new(pidfile),
            socket.map(Path::new),
            sys,
            &mut log,
        )?;
    }

    let data_root = &plan.data_root;
    sys.mkdir_all(data_root)
        .map_err(step(format!("create {}", data_root.display())))?;
    if data == DataPolicy::Ephemeral {
        sys.empty_dir(data_root, &[LOCK_FILE, TRASH_DIR])
            .map_err(step(format!(
                "empty {} (DOCKER_DATA=ephemeral)",
                data_root.display()
            )))?;
        log.push(format!("emptied {}", data_root.display()));
    }

    write_config(plan, sys)?;

    if let Some(c) = &plan.containerd {
        for dir in [&c.config_file, &c.socket] {
            let dir = dir.parent().expect("absolute");
            sys.mkdir_all(dir)
                .map_err(step(format!("create {}", dir.display())))?;
        }
        sys.write(&c.config_file, &c.config)
            .map_err(step(format!("write {}", c.config_file.display())))?;
    }

    let backend = plan.iptables.as_str();
    let dir = Path::new(plan::IPTABLES_DIR);
    sys.mkdir_all(dir)
        .map_err(step(format!("create {}", plan::IPTABLES_DIR)))?;
    for tool in [
        "iptables",
        "iptables-save",
        "iptables-restore",
        "ip6tables",
        "ip6tables-save",
        "ip6tables-restore",
    ] {
        let target = iptables_target(tool, backend);
        let link = dir.join(tool);
        if sys.exists(&target) {
            let _ = sys.remove_file(&link);
            sys.symlink(&target, &link)
                .map_err(step(format!("link {}", link.display())))?;
        }
    }
    log.push(format!("iptables backend {backend}"));
    Ok(log)
}

/// Writes the plan's daemon.json (`prepare` does; `launch` again when the plan changed once
/// dockerd's version was known).
pub fn write_config(plan: &Plan, sys: &dyn System) -> Result<(), PrepareError> {
    let config = Path::new(plan::CONFIG_FILE);
    sys.mkdir_all(config.parent().expect("absolute"))
        .map_err(step("create /etc/docker"))?;
    let json = serde_json::to_string_pretty(&plan.daemon_json).expect("JSON serialises");
    sys.write(config, &format!("{json}\n"))
        .map_err(step(format!("write {}", plan::CONFIG_FILE)))
}

/// `iptables-save` -> `/usr/sbin/iptables-legacy-save`; `iptables` -> `/usr/sbin/iptables-legacy`.
fn iptables_target(tool: &str, backend: &str) -> PathBuf {
    let (base, suffix) = match tool.split_once('-') {
        Some((b, s)) => (b, format!("-{s}")),
        None => (tool, String::new()),
    };
    PathBuf::from(format!("/usr/sbin/{base}-{backend}{suffix}"))
}

/// A pid file whose process is gone is removed with its socket; one whose process still runs (and
/// is what the file says) stops us. A pid reused by another process counts as gone.
fn remove_stale(
    what: &'static str,
    pidfile: &Path,
    socket: Option<&Path>,
    sys: &dyn System,
    log: &mut Vec<String>,
) -> Result<(), PrepareError> {
    if let Ok(text) = sys.read(pidfile)
        && let Ok(pid) = text.trim().parse::<i32>()
        && sys.process_name(pid).is_some_and(|n| n.starts_with(what))
    {
        return Err(PrepareError::AlreadyRunning {
            what,
            pid,
            pidfile: pidfile.display().to_string(),
        });
    }
    for p in std::iter::once(pidfile).chain(socket) {
        if sys.exists(p) {
            sys.remove_file(p)
                .map_err(step(format!("remove stale {}", p.display())))?;
            log.push(format!("removed stale {}", p.display()));
        }
    }
    Ok(())
}

/// moby's hack/dind for cgroup v2 with us in the root cgroup: a cgroup with processes cannot
/// enable controllers for its children, so move everyone into `into`, then enable them. Processes
/// that start meanwhile land in the root again and make the write fail with EBUSY: retry.
fn nest_cgroup_v2(
    into: &Path,
    controllers: &[String],
    sys: &dyn System,
) -> Result<u32, PrepareError> {
    let root = Path::new("/sys/fs/cgroup");
    sys.mkdir_all(into)
        .map_err(step(format!("create {}", into.display())))?;
    let enable: String = controllers
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut last = None;
    for attempt in 1..=NEST_ATTEMPTS {
        let procs = sys
            .read(&root.join("cgroup.procs"))
            .map_err(step("read /sys/fs/cgroup/cgroup.procs"))?;
        for pid in procs.lines().filter(|l| !l.trim().is_empty()) {
            // A process may exit between the read and the write: that is fine.
            let _ = sys.write(&into.join("cgroup.procs"), pid.trim());
        }
        if enable.is_empty() {
            return Ok(attempt);
        }
        match sys.write(&root.join("cgroup.subtree_control"), &enable) {
            Ok(()) => return Ok(attempt),
            Err(e) => {
                last = Some(e);
                sys.sleep(Duration::from_millis(10 * u64::from(attempt)));
            }
        }
    }
    Err(PrepareError::Step {
        step: format!(
            "enable controllers in /sys/fs/cgroup/cgroup.subtree_control after {NEST_ATTEMPTS} attempts"
        ),
        source: last.unwrap_or_else(|| io::Error::other("unknown")),
    })
}

/// The real system.
pub struct RealSystem;

impl System for RealSystem {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        std::fs::write(path, contents)
    }
    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn exists(&self, path: &Path) -> bool {
        path.symlink_metadata().is_ok()
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn empty_dir(&self, dir: &Path, keep: &[&str]) -> io::Result<()> {
        let trash = Trash::new(dir.join(TRASH_DIR));
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !keep.iter().any(|k| entry.file_name() == *k) {
                trash.discard(&entry.path())?;
            }
        }
        trash.empty_in_background();
        Ok(())
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }
    fn mount_securityfs(&self) -> io::Result<()> {
        use nix::mount::{MsFlags, mount};
        let target = Path::new("/sys/kernel/security");
        if std::fs::read_to_string("/proc/self/mountinfo")
            .map(|m| m.contains(" /sys/kernel/security "))
            .unwrap_or(false)
        {
            return Ok(());
        }
        mount(
            Some("none"),
            target,
            Some("securityfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(io::Error::from)
    }
    fn make_rshared_root(&self) -> io::Result<()> {
        use nix::mount::{MsFlags, mount};
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(io::Error::from)
    }
    fn process_name(&self, pid: i32) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|s| s.trim().to_string())
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// The real system seen from sysrunner through another root: the life sandbox's, at
/// `/proc/<its init>/root`, where dockerd runs. Paths are the life's; the files touched are the
/// life's. Mounts are not made this way (the life's init makes them).
pub struct RootedSystem {
    pub root: PathBuf,
}

impl RootedSystem {
    fn at(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

impl System for RootedSystem {
    fn read(&self, path: &Path) -> io::Result<String> {
        RealSystem.read(&self.at(path))
    }
    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        RealSystem.write(&self.at(path), contents)
    }
    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        RealSystem.mkdir_all(&self.at(path))
    }
    fn exists(&self, path: &Path) -> bool {
        RealSystem.exists(&self.at(path))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealSystem.remove_file(&self.at(path))
    }
    fn empty_dir(&self, dir: &Path, keep: &[&str]) -> io::Result<()> {
        RealSystem.empty_dir(&self.at(dir), keep)
    }
    /// The link says the life's path; it is made in the life's tree.
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        RealSystem.symlink(target, &self.at(link))
    }
    fn mount_securityfs(&self) -> io::Result<()> {
        Err(io::Error::other("mounts in the life are its init's"))
    }
    fn make_rshared_root(&self) -> io::Result<()> {
        Err(io::Error::other("mounts in the life are its init's"))
    }
    fn process_name(&self, pid: i32) -> Option<String> {
        RealSystem.process_name(pid)
    }
    fn sleep(&self, d: Duration) {
        RealSystem.sleep(d)
    }
}

#[cfg(test)]
mod tests;
