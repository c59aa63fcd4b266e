//! Restoring a life to pristine before the runner starts: the runner directory as a fresh overlay
//! over the read-only release (or a fresh copy where no overlay can be mounted), HOME from the
//! skeleton, /tmp emptied, the sudoers rule as RUNNER_SUDO says. Everything a job wrote in the
//! previous life of this container is gone afterwards. The paths are decided purely; the effects
//! need root.

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::unistd::{Gid, Uid, chown};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where each life's state lives. `/var/lib/sysrunner` is in the container's own writable layer:
/// it survives a restart of the same container (compose `restart: always`), which is what lets a
/// life find the registration an earlier life left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The read-only, root-owned actions/runner release (RUNNER_DIR).
    pub release: PathBuf,
    pub state: PathBuf,
    /// Where the runner runs from: an overlay of `release`.
    pub runner_root: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub home: PathBuf,
    pub skeleton: PathBuf,
    pub tmp: PathBuf,
    pub sudoers: PathBuf,
    /// The runner id this container registered and has not yet seen deleted.
    pub record: PathBuf,
    /// Published state for `sysrunner healthcheck`.
    pub run_dir: PathBuf,
}

impl Layout {
    pub fn new(release: &Path, home: &Path, root: &Path) -> Layout {
        let state = root.join("var/lib/sysrunner");
        Layout {
            release: release.to_path_buf(),
            runner_root: state.join("runner"),
            upper: state.join("overlay/upper"),
            work: state.join("overlay/work"),
            record: state.join("registration.json"),
            state,
            home: home.to_path_buf(),
            skeleton: root.join("etc/skel"),
            tmp: root.join("tmp"),
            sudoers: root.join("etc/sudoers.d/sysrunner"),
            run_dir: root.join("run/sysrunner"),
        }
    }
}

/// The runner user as the image defines it.
#[derive(Debug, Clone)]
pub struct RunnerUser {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub home: PathBuf,
}

impl RunnerUser {
    pub fn lookup(name: &str) -> Result<RunnerUser, String> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) if u.uid.is_root() => Err(format!(
                "RUNNER_USER={name:?} has uid 0: jobs never run as root"
            )),
            Ok(Some(u)) => Ok(RunnerUser {
                name: u.name,
                uid: u.uid,
                gid: u.gid,
                home: u.dir,
            }),
            Ok(None) => Err(format!(
                "RUNNER_USER={name:?} does not exist in this image; create it (useradd -m {name}) or set RUNNER_USER to an existing user"
            )),
            Err(e) => Err(format!("cannot look up RUNNER_USER={name:?}: {e}")),
        }
    }
}

/// How the runner directory was made this life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerDir {
    Overlay,
    /// No overlay possible here: a full copy, whose cost `restore` reports.
    Copy,
}

#[derive(Debug)]
pub struct Restored {
    pub runner_dir: RunnerDir,
    pub took: std::time::Duration,
    pub notes: Vec<String>,
}

fn ctx<T>(what: impl Into<String>, r: io::Result<T>) -> Result<T, String> {
    let what = what.into();
    r.map_err(|e| format!("{what}: {e}"))
}

/// Empties `dir` (keeps `dir`), not following symlinks.
pub fn empty_dir(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return std::fs::create_dir_all(dir),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let p = entry.path();
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

fn chown_tree(path: &Path, uid: Uid, gid: Gid) -> io::Result<()> {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(uid),
        Some(gid),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)?;
    if path.symlink_metadata()?.is_dir() {
        for e in std::fs::read_dir(path)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Covers each secret file with /dev/null, in this container's mount namespace: the secret was read
/// at start-up, and a job (compose secrets are often world-readable) must not read it again. A
/// covering mount, not an unmount: the runtime's own mount may be locked (sysbox). Returns what
/// could not be masked, with why.
pub fn mask_secret_files(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| {
            mount(
                Some("/dev/null"),
                f,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .err()
            .map(|e| format!("{}: {e}", f.display()))
        })
        .collect()
}

/// Chowns every directory below `path` (not following symlinks); returns how many.
fn chown_dirs(path: &Path, uid: Uid, gid: Gid) -> io::Result<usize> {
    chown(path, Some(uid), Some(gid)).map_err(io::Error::from)?;
    let mut n = 1;
    for e in std::fs::read_dir(path)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            n += chown_dirs(&e.path(), uid, gid)?;
        }
    }
    Ok(n)
}

/// Copies a tree, keeping modes and symlinks; used for HOME's skeleton and the copy fallback.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        let ft = entry.file_type()?;
        if ft.is_dir() {
            copy_tree(&entry.path(), &dest)?;
            std::fs::set_permissions(&dest, entry.metadata()?.permissions())?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

fn mounted_at(path: &Path) -> bool {
    let p = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(&p)))
        .unwrap_or(false)
}

/// Makes this life pristine. Needs root in the container.
pub fn restore(layout: &Layout, user: &RunnerUser, sudo: bool) -> Result<Restored, String> {
    let started = Instant::now();
    let mut notes = Vec::new();
    if !layout.release.join("bin/Runner.Listener").exists() {
        return Err(format!(
            "{} holds no actions/runner release (bin/Runner.Listener is missing): set RUNNER_DIR to where the image unpacked it",
            layout.release.display()
        ));
    }

    // The runner directory: unmount the last life's overlay, drop its upper layer, mount anew.
    while mounted_at(&layout.runner_root) {
        ctx(
            "unmount the last runner directory",
            umount2(&layout.runner_root, MntFlags::MNT_DETACH).map_err(io::Error::from),
        )?;
    }
    for d in [&layout.runner_root, &layout.upper, &layout.work] {
        ctx(format!("empty {}", d.display()), empty_dir(d))?;
    }
    ctx(
        "own the upper layer",
        chown(&layout.upper, Some(user.uid), Some(user.gid)).map_err(io::Error::from),
    )?;
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        layout.release.display(),
        layout.upper.display(),
        layout.work.display()
    );
    let runner_dir = match mount(
        Some("overlay"),
        &layout.runner_root,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(opts.as_str()),
    ) {
        Ok(()) => {
            // The release's files stay root-owned and read-only to the runner, but its directories
            // become the runner's, so it can add, replace and remove files (`.runner`, `_work`, a
            // self-update): chown of a directory copies up only the directory, not the files.
            let t = Instant::now();
            let dirs = ctx(
                "own the runner directories",
                chown_dirs(&layout.runner_root, user.uid, user.gid),
            )?;
            notes.push(format!(
                "gave the runner {dirs} directories of the release in {:.2}s",
                t.elapsed().as_secs_f64()
            ));
            RunnerDir::Overlay
        }
        Err(e) => {
            let t = Instant::now();
            ctx(
                "copy the runner release",
                copy_tree(&layout.release, &layout.runner_root),
            )?;
            ctx(
                "own the runner directory",
                chown_tree(&layout.runner_root, user.uid, user.gid),
            )?;
            notes.push(format!(
                "overlay not possible here ({e}): copied {} in {:.2}s",
                layout.release.display(),
                t.elapsed().as_secs_f64()
            ));
            RunnerDir::Copy
        }
    };

    // HOME from the skeleton.
    ctx(
        format!("empty {}", layout.home.display()),
        empty_dir(&layout.home),
    )?;
    if layout.skeleton.is_dir() {
        ctx(
            "copy the home skeleton",
            copy_tree(&layout.skeleton, &layout.home),
        )?;
    }
    ctx("own HOME", chown_tree(&layout.home, user.uid, user.gid))?;

    ctx("empty /tmp", empty_dir(&layout.tmp))?;

    // sudo for jobs, or not.
    if sudo {
        if let Some(dir) = layout.sudoers.parent() {
            ctx("create /etc/sudoers.d", std::fs::create_dir_all(dir))?;
        }
        ctx(
            "write the sudoers rule",
            std::fs::write(
                &layout.sudoers,
                format!("{} ALL=(ALL) NOPASSWD:ALL\n", user.name),
            ),
        )?;
        use std::os::unix::fs::PermissionsExt;
        ctx(
            "sudoers mode",
            std::fs::set_permissions(&layout.sudoers, std::fs::Permissions::from_mode(0o440)),
        )?;
    } else {
        match std::fs::remove_file(&layout.sudoers) {
            Ok(()) => notes.push("RUNNER_SUDO=false: removed the sudoers rule".into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("remove the sudoers rule: {e}")),
        }
    }
    ctx(
        "create /run/sysrunner",
        std::fs::create_dir_all(&layout.run_dir),
    )?;
    Ok(Restored {
        runner_dir,
        took: started.elapsed(),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_keeps_life_state_in_the_container_layer_and_health_in_run() {
        let l = Layout::new(
            Path::new("/opt/actions-runner"),
            Path::new("/home/runner"),
            Path::new("/"),
        );
        assert_eq!(l.runner_root, Path::new("/var/lib/sysrunner/runner"));
        assert_eq!(l.record, Path::new("/var/lib/sysrunner/registration.json"));
        assert_eq!(l.run_dir, Path::new("/run/sysrunner"));
        assert_eq!(l.sudoers, Path::new("/etc/sudoers.d/sysrunner"));
    }

    #[test]
    fn empty_dir_keeps_the_dir_and_does_not_follow_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        let d = t.path().join("d");
        std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
        std::fs::write(d.join("f"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, d.join("link")).unwrap();
        empty_dir(&d).unwrap();
        assert!(d.is_dir());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        assert!(outside.join("keep").exists(), "followed a symlink");
    }
}
