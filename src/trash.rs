//! A trash directory: what a new life must not find is renamed into it (one rename, however much
//! a job wrote), and a thread of its own deletes it beside the life, off its path. The trash must
//! be on the same filesystem as what goes into it. Owns only the trash directory it is given;
//! what goes in is the caller's decision.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A trash at `dir`, made (mode 0700) when the first thing goes in.
#[derive(Debug, Clone)]
pub struct Trash {
    dir: PathBuf,
}

impl Trash {
    pub fn new(dir: impl Into<PathBuf>) -> Trash {
        Trash { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves `path`, if it exists, into the trash, under a name no other discard takes.
    pub fn discard(&self, path: &Path) -> io::Result<()> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let to = self.dir.join(format!(
            "{name}.{}.{nanos}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::rename(path, &to) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    /// Empties the trash in a thread of its own, which nothing waits for: cut off by the
    /// container's end, it goes on at the next start.
    pub fn empty_in_background(&self) {
        let trash = self.dir.clone();
        let spawned = std::thread::Builder::new()
            .name("sysrunner-trash".into())
            .spawn(move || {
                let Ok(entries) = std::fs::read_dir(&trash) else {
                    return;
                };
                for e in entries.flatten() {
                    let path = e.path();
                    let gone = if e.file_type().is_ok_and(|t| t.is_dir()) {
                        remove_tree(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    if let Err(err) = gone {
                        tracing::warn!("cannot empty {}: {err}", path.display());
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start emptying {}: {e}", self.dir.display());
        }
    }
}

/// Removes a directory tree; one that is gone already is not an error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn discarded_things_leave_at_once_and_the_trash_empties_itself() {
        let t = tempfile::tempdir().unwrap();
        let trash = Trash::new(t.path().join("trash"));
        let tree = t.path().join("images/overlay2/abc");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("layer"), "x").unwrap();
        std::fs::write(t.path().join("file"), "y").unwrap();
        trash.discard(&t.path().join("images")).unwrap();
        trash.discard(&t.path().join("file")).unwrap();
        trash.discard(&t.path().join("never-was")).unwrap();
        assert!(!t.path().join("images").exists() && !t.path().join("file").exists());
        assert_eq!(std::fs::read_dir(trash.dir()).unwrap().count(), 2);
        trash.empty_in_background();
        let end = Instant::now() + Duration::from_secs(30);
        while std::fs::read_dir(trash.dir()).unwrap().count() > 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(std::fs::read_dir(trash.dir()).unwrap().count(), 0);
    }
}
