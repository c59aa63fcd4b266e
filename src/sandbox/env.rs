//! What the sandbox's plan needs to know about this container that the probe does not read: how
//! its root and its `/tmp` are mounted, which device nodes it has, its resolver configuration and
//! sysrunner's own binary. Reads only, through a root path like the probe.

use super::plan::Tmp;
use std::path::{Path, PathBuf};

/// The device nodes a life may get, when the container has them: the ones every container has,
/// `fuse` (fuse-overlayfs, the storage fallback), and `net/tun` is left out on purpose.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty", "fuse"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub root_fstype: Option<String>,
    pub tmp: Tmp,
    pub devices: Vec<String>,
    pub resolv_conf: String,
    pub exe: PathBuf,
}

/// One mountinfo line's mount point, type, per-mount options and superblock options.
fn mount_line(line: &str) -> Option<(String, String, Vec<String>, Vec<String>)> {
    let (left, right) = line.split_once(" - ")?;
    let f: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.split(' ').collect();
    let opts = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
    Some((
        f.get(4)?.to_string(),
        r.first()?.to_string(),
        opts(f.get(5)?),
        opts(r.get(2).copied().unwrap_or("")),
    ))
}

/// The root's type and `/tmp`'s mount, from mountinfo (the last mount listed at a path is the one
/// that shows).
pub fn mounts(mountinfo: &str) -> (Option<String>, Tmp) {
    let mut root = None;
    let mut tmp = Tmp::Disk;
    for (point, fstype, mount_opts, super_opts) in mountinfo.lines().filter_map(mount_line) {
        match point.as_str() {
            "/" => root = Some(fstype),
            "/tmp" if fstype == "tmpfs" => {
                let mut options = mount_opts;
                options.extend(super_opts);
                tmp = Tmp::Tmpfs { options };
            }
            "/tmp" => tmp = Tmp::Disk,
            _ => {}
        }
    }
    (root, tmp)
}

pub fn read(root: &Path) -> Env {
    let (root_fstype, tmp) =
        mounts(&std::fs::read_to_string(root.join("proc/self/mountinfo")).unwrap_or_default());
    let devices = DEVICES
        .iter()
        .filter(|d| {
            std::fs::metadata(root.join("dev").join(d)).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_char_device()
            })
        })
        .map(|d| d.to_string())
        .collect();
    Env {
        root_fstype,
        tmp,
        devices,
        resolv_conf: std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap_or_default(),
        exe: std::fs::read_link(root.join("proc/self/exe"))
            .unwrap_or_else(|_| PathBuf::from("/usr/local/bin/sysrunner")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_and_tmp_mounts_are_read_from_mountinfo() {
        let mi = "\
600 500 0:50 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
601 600 0:51 / /tmp rw,nosuid,nodev - tmpfs tmpfs rw,size=2097152k,mode=1777
602 600 0:52 / /run rw,nosuid,nodev,noexec - tmpfs tmpfs rw,size=262144k,mode=755
";
        let (root, tmp) = mounts(mi);
        assert_eq!(root.as_deref(), Some("overlay"));
        assert_eq!(
            tmp,
            Tmp::Tmpfs {
                options: ["rw", "nosuid", "nodev", "rw", "size=2097152k", "mode=1777"]
                    .map(String::from)
                    .to_vec()
            }
        );
        let (_, tmp) = mounts("600 500 0:50 / / rw - ext4 /dev/vda rw\n");
        assert_eq!(tmp, Tmp::Disk);
    }
}
