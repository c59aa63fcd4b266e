//! The data volume's layout for the sandbox (`super::plan::Layout`) made real before each life,
//! and cleared after: the life's overlay directories fresh, its files and opaque marks written into
//! the upper layer, its per-life directories fresh, dockerd's data directory kept or emptied.
//! Blocking file work: call it from a blocking thread. Owns these directories, nothing else of
//! the volume but what the layout names.

use super::plan::{Layout, Plan};
use crate::config::DataPolicy;
use std::ffi::CString;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The name dockerd's lock file has in its data root (`crate::dockerd::effects::LOCK_FILE`):
/// kept when the data directory is emptied.
const KEEP_IN_DATA: &[&str] = &[crate::dockerd::effects::LOCK_FILE];

fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn mkdir(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// `user.overlay.opaque=y`: the overlay (mounted with `userxattr`) shows nothing of the lower
/// layer below this directory.
fn make_opaque(dir: &Path) -> io::Result<()> {
    let path = CString::new(dir.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let name = c"user.overlay.opaque";
    // SAFETY: valid C strings and a 1-byte value.
    let rc =
        unsafe { nix::libc::lsetxattr(path.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Gets the volume ready for the life `plan` describes.
pub fn prepare(layout: &Layout, plan: &Plan, data: DataPolicy) -> io::Result<()> {
    // Before the sandbox the whole volume was dockerd's data root: what lies at its top that the
    // layout does not name is an earlier dockerd's, and goes.
    if let Ok(entries) = std::fs::read_dir(&layout.volume) {
        let ours = [&layout.data, &layout.life, &layout.dirs, &layout.state];
        for e in entries.flatten() {
            let path = e.path();
            if !ours.iter().any(|o| **o == path) {
                if e.file_type()?.is_dir() {
                    remove_tree(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
        }
    }
    clear(layout)?;
    for d in [layout.upper(), layout.work(), layout.root()] {
        mkdir(&d, 0o755)?;
    }
    let upper = layout.upper();
    let under = |p: &Path| upper.join(p.strip_prefix("/").unwrap_or(p));
    for f in &plan.files {
        let path = under(&f.path);
        if let Some(parent) = path.parent() {
            mkdir(parent, 0o755)?;
        }
        std::fs::write(&path, &f.contents)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))?;
    }
    for d in &plan.opaque {
        let path = under(d);
        mkdir(&path, 0o755)?;
        make_opaque(&path)?;
    }
    for d in &plan.life_dirs {
        remove_tree(d)?;
        // /tmp's mode where it is a directory; the others are root's and private.
        mkdir(d, if d.ends_with("tmp") { 0o1777 } else { 0o700 })?;
    }
    mkdir(&layout.data, 0o710)?;
    if data == DataPolicy::Ephemeral {
        for e in std::fs::read_dir(&layout.data)?.flatten() {
            if KEEP_IN_DATA.iter().any(|k| e.file_name() == *k) {
                continue;
            }
            let path = e.path();
            if e.file_type()?.is_dir() {
                remove_tree(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
    }
    mkdir(&layout.state, 0o700)
}

/// Drops what a life left on the volume: its overlay and per-life directories.
pub fn clear(layout: &Layout) -> io::Result<()> {
    remove_tree(&layout.life)?;
    remove_tree(&layout.dirs)
}
