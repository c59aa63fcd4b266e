//! The data volume's layout for the sandbox (`super::plan::Layout`) made real before each life,
//! and cleared after: the life's overlay directories fresh, its files and opaque marks written into
//! the upper layer, its per-life directories fresh, dockerd's data directory kept or emptied.
//! Nothing an earlier life left is deleted on a life's path: it is renamed into the trash (one
//! rename per directory, however much a job wrote) and the trash is emptied by a thread of its own
//! beside the next life. Blocking file work: call it from a blocking thread. Owns these
//! directories, nothing else of the volume but what the layout names.

use super::plan::{Layout, Plan};
use crate::config::DataPolicy;
use crate::trash::Trash;
use std::ffi::CString;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The names dockerd's lock file and trash have in its data root (`crate::dockerd::effects`):
/// kept when the data directory is emptied.
const KEEP_IN_DATA: &[&str] = &[
    crate::dockerd::effects::LOCK_FILE,
    crate::dockerd::effects::TRASH_DIR,
];

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

/// Moves `path`, if it exists, into the volume's trash.
fn discard(layout: &Layout, path: &Path) -> io::Result<()> {
    Trash::new(&layout.trash).discard(path)
}

/// Empties the volume's trash in a thread of its own, which nothing waits for: cut off by the
/// container's end, it goes on at the next start.
pub fn empty_trash(layout: &Layout) {
    Trash::new(&layout.trash).empty_in_background();
}

/// Gets the volume ready for the life `plan` describes. What earlier lives left goes to the
/// trash, which [`empty_trash`] empties.
pub fn prepare(layout: &Layout, plan: &Plan, data: DataPolicy) -> io::Result<()> {
    // Before the sandbox the whole volume was dockerd's data root: what lies at its top that the
    // layout does not name is an earlier dockerd's, and goes.
    if let Ok(entries) = std::fs::read_dir(&layout.volume) {
        let ours = [
            &layout.data,
            &layout.life,
            &layout.dirs,
            &layout.state,
            &layout.trash,
        ];
        for e in entries.flatten() {
            let path = e.path();
            if !ours.iter().any(|o| **o == path) {
                discard(layout, &path)?;
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
        discard(layout, d)?;
        // /tmp's mode where it is a directory; the others are root's and private.
        mkdir(d, if d.ends_with("tmp") { 0o1777 } else { 0o700 })?;
    }
    mkdir(&layout.data, 0o710)?;
    if data == DataPolicy::Ephemeral {
        for e in std::fs::read_dir(&layout.data)?.flatten() {
            if KEEP_IN_DATA.iter().any(|k| e.file_name() == *k) {
                continue;
            }
            discard(layout, &e.path())?;
        }
    }
    mkdir(&layout.state, 0o700)
}

/// Drops what a life left on the volume, its overlay and per-life directories, into the trash.
pub fn clear(layout: &Layout) -> io::Result<()> {
    discard(layout, &layout.life)?;
    discard(layout, &layout.dirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::plan::File;
    use std::time::{Duration, Instant};

    fn plan(layout: &Layout) -> Plan {
        Plan {
            steps: Vec::new(),
            files: vec![File {
                path: "/etc/hostname".into(),
                contents: "life\n".into(),
                mode: 0o644,
            }],
            opaque: Vec::new(),
            life_dirs: vec![layout.dirs.join("tmp")],
            hostname: "life".into(),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// What a life and an earlier dockerd left: a stray entry at the volume's top, images in the
    /// data root beside its lock file, the life's overlay and per-life directories.
    fn litter(l: &Layout) {
        std::fs::create_dir_all(l.volume.join("overlay2/abc")).unwrap();
        std::fs::create_dir_all(l.data.join("image/overlay2")).unwrap();
        std::fs::write(l.data.join(crate::dockerd::effects::LOCK_FILE), "").unwrap();
        std::fs::create_dir_all(l.upper().join("usr/local/bin")).unwrap();
        std::fs::write(l.upper().join("usr/local/bin/hostile"), "x").unwrap();
        std::fs::create_dir_all(l.dirs.join("tmp/left")).unwrap();
    }

    #[test]
    fn what_earlier_lives_left_goes_to_the_trash_and_the_trash_is_emptied_beside_the_life() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        litter(&l);
        prepare(&l, &plan(&l), DataPolicy::Ephemeral).unwrap();

        assert_eq!(
            names(&l.volume),
            ["data", "life", "life-dirs", "sysrunner", "trash"]
        );
        assert_eq!(names(&l.data), [crate::dockerd::effects::LOCK_FILE]);
        assert!(!l.upper().join("usr/local/bin/hostile").exists());
        assert_eq!(
            std::fs::read_to_string(l.upper().join("etc/hostname")).unwrap(),
            "life\n"
        );
        assert_eq!(names(&l.dirs), ["tmp"]);
        assert_eq!(names(&l.dirs.join("tmp")), Vec::<String>::new());
        // The stray tree, the images, the old overlay and per-life directories: renamed, whole.
        let trash = names(&l.trash);
        assert_eq!(trash.len(), 4, "{trash:?}");
        for prefix in ["overlay2.", "image.", "life.", "life-dirs."] {
            assert!(trash.iter().any(|n| n.starts_with(prefix)), "{trash:?}");
        }

        clear(&l).unwrap();
        assert!(!l.life.exists() && !l.dirs.exists());
        assert_eq!(names(&l.trash).len(), 6);

        empty_trash(&l);
        let end = Instant::now() + Duration::from_secs(30);
        while !names(&l.trash).is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(names(&l.trash), Vec::<String>::new());
        assert_eq!(names(&l.data), [crate::dockerd::effects::LOCK_FILE]);
    }

    #[test]
    fn with_docker_data_kept_the_images_stay() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        litter(&l);
        prepare(&l, &plan(&l), DataPolicy::Keep).unwrap();
        assert_eq!(
            names(&l.data),
            [crate::dockerd::effects::LOCK_FILE, "image"]
        );
        assert!(l.data.join("image/overlay2").is_dir());
    }
}
