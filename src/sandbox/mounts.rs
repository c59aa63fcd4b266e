//! The executor of the life's mount plan (`super::plan::Step`), run by the life's PID 1 in the
//! life's fresh mount namespace, single-threaded. Each step is one or two system calls; a failure
//! names the step. Decides nothing: the plan is `super::plan`'s.

use super::plan::Step;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

fn mkdir_p(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
}

/// A file to bind onto: created empty when missing.
fn touch(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        mkdir_p(parent)?;
    }
    if path.symlink_metadata().is_err() {
        std::fs::File::create(path)?;
    }
    Ok(())
}

fn fs(
    what: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mkdir_p(target).map_err(|e| format!("mkdir {}: {e}", target.display()))?;
    mount(Some(what), target, Some(fstype), flags, data)
        .map_err(|e| format!("mount {fstype} on {}: {e}", target.display()))
}

fn name(s: &Step) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// Applies every step in order; the first failure stops it, with the step.
pub fn apply(steps: &[Step]) -> Result<(), (String, String)> {
    for s in steps {
        one(s).map_err(|e| (name(s), e))?;
    }
    Ok(())
}

fn one(s: &Step) -> Result<(), String> {
    let nodev_nosuid_noexec = MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    match s {
        Step::MakeRprivate => mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| e.to_string()),
        Step::Overlay {
            target,
            upper,
            work,
        } => {
            // `lowerdir=/`: the container's root mount alone, none of its submounts. `userxattr`:
            // overlay's metadata in user.* xattrs, as it must in a user namespace (sysrunner writes
            // the upper's opaque marks the same way). `volatile`: the upper is dropped with the
            // life, so its writes need no sync.
            let data = format!(
                "lowerdir=/,upperdir={},workdir={},userxattr,volatile",
                upper.display(),
                work.display()
            );
            fs("overlay", target, "overlay", MsFlags::empty(), Some(&data))
        }
        Step::Proc { target } => fs("proc", target, "proc", nodev_nosuid_noexec, None),
        Step::Sysfs { target } => fs("sysfs", target, "sysfs", nodev_nosuid_noexec, None),
        Step::Securityfs { target } => {
            // As moby's hack/dind: where AppArmor is absent there is nothing to mount, and dockerd
            // copes.
            let _ = fs(
                "securityfs",
                target,
                "securityfs",
                nodev_nosuid_noexec,
                None,
            );
            Ok(())
        }
        Step::Cgroup2 { target } => fs("cgroup2", target, "cgroup2", nodev_nosuid_noexec, None),
        Step::CgroupV1 { target, options } => fs(
            "cgroup",
            target,
            "cgroup",
            nodev_nosuid_noexec,
            Some(options),
        ),
        Step::Tmpfs {
            target,
            data,
            nosuid,
            nodev,
            noexec,
        } => {
            let mut flags = MsFlags::empty();
            flags.set(MsFlags::MS_NOSUID, *nosuid);
            flags.set(MsFlags::MS_NODEV, *nodev);
            flags.set(MsFlags::MS_NOEXEC, *noexec);
            fs("tmpfs", target, "tmpfs", flags, Some(data))
        }
        Step::Devpts { target } => fs(
            "devpts",
            target,
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        ),
        Step::Mqueue { target } => fs("mqueue", target, "mqueue", nodev_nosuid_noexec, None),
        Step::Bind {
            source,
            target,
            file,
        } => {
            if *file {
                touch(target).map_err(|e| format!("create {}: {e}", target.display()))?;
            } else {
                mkdir_p(target).map_err(|e| format!("mkdir {}: {e}", target.display()))?;
            }
            mount(
                Some(source.as_path()),
                target.as_path(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| format!("bind {} on {}: {e}", source.display(), target.display()))
        }
        Step::Mkdir { path } => mkdir_p(path).map_err(|e| format!("mkdir {}: {e}", path.display())),
        Step::RemountReadOnly { target } => mount(
            None::<&str>,
            target.as_path(),
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| format!("remount {} read-only: {e}", target.display())),
        Step::Symlink { to, link } => {
            let _ = std::fs::remove_file(link);
            std::os::unix::fs::symlink(to, link)
                .map_err(|e| format!("symlink {}: {e}", link.display()))
        }
        Step::PivotRoot { root } => {
            nix::unistd::chdir(root.as_path())
                .map_err(|e| format!("chdir {}: {e}", root.display()))?;
            // pivot_root(".", "."), then detach the old root stacked under the new one: the
            // recipe runc uses, which needs no directory for the old root.
            nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
            umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach the old root: {e}"))?;
            nix::unistd::chdir("/").map_err(|e| e.to_string())
        }
        Step::MakeRshared => mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_SHARED,
            None::<&str>,
        )
        .map_err(|e| e.to_string()),
        Step::ChownDirs { path, uid, gid } => chown_dirs(path, *uid, *gid)
            .map(|_| ())
            .map_err(|e| format!("chown {}: {e}", path.display())),
    }
}

/// Gives every directory below `path` (and `path`) to `uid:gid`, not following symlinks; the files
/// keep their owner. On the life's overlay each chown copies only the directory up.
pub fn chown_dirs(path: &Path, uid: u32, gid: u32) -> std::io::Result<usize> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(0);
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    let mut n = 1;
    for e in std::fs::read_dir(path)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            n += chown_dirs(&e.path(), uid, gid)?;
        }
    }
    Ok(n)
}
