//! Images for boxes. A tiny container image made from the host's static busybox, for machines
//! that reach no image registry: a rootfs tar that `docker import` turns into an image. And an
//! image's own filesystem made ready for a box ([`unpack`], [`shift_tree`]), as sysbox prepares a
//! container's: unpacked, its owners shifted into the box's id range. Writes only the tar or tree
//! it is asked for.

use std::io::{self, Write};
use std::path::Path;
use std::process::Command;

/// Debian's busybox-static.
pub const BUSYBOX: &str = "/bin/busybox";
/// The name tests import the rootfs as.
pub const IMAGE: &str = "sysrunner-test/busybox:latest";

/// Writes the rootfs tar of [`BUSYBOX`] to `dest`: `bin/busybox`, a `bin/<applet>` symlink for
/// every applet it lists, `/etc/passwd` and `/etc/group` with root and nobody, and the usual
/// empty directories. Import it with `docker import <dest> <name>` and run e.g. `busybox true`.
pub fn write_busybox_rootfs(dest: &Path) -> io::Result<()> {
    let busybox = std::fs::read(BUSYBOX)?;
    let out = Command::new(BUSYBOX).arg("--list").output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{BUSYBOX} --list failed: {}",
            out.status
        )));
    }
    let list = String::from_utf8_lossy(&out.stdout);
    let applets: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    let mut file = io::BufWriter::new(std::fs::File::create(dest)?);
    busybox_rootfs(&busybox, &applets, &mut file)?;
    file.flush()
}

/// The rootfs tar of a busybox binary with these applets, written to `out`.
pub fn busybox_rootfs(busybox: &[u8], applets: &[&str], out: &mut impl Write) -> io::Result<()> {
    let mut tar = Tar { out };
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("var", 0o755),
    ] {
        tar.entry(dir, mode, Kind::Dir, b"")?;
    }
    tar.entry("bin/busybox", 0o755, Kind::File, busybox)?;
    for a in applets {
        // Applet names are plain words; anything else (or busybox itself) is not linked.
        if *a != "busybox" && !a.contains('/') && *a != "." && *a != ".." {
            tar.entry(&format!("bin/{a}"), 0o777, Kind::Symlink("busybox"), b"")?;
        }
    }
    tar.entry(
        "etc/passwd",
        0o644,
        Kind::File,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    tar.entry(
        "etc/group",
        0o644,
        Kind::File,
        b"root:x:0:\nnogroup:x:65534:\n",
    )?;
    tar.finish()
}

enum Kind<'a> {
    File,
    Dir,
    Symlink(&'a str),
}

/// A ustar (POSIX.1-1988) writer for the few entry kinds a rootfs needs. Every entry is owned by
/// root with mtime 0, so the same input gives the same bytes.
struct Tar<'w, W: Write> {
    out: &'w mut W,
}

const BLOCK: usize = 512;

impl<W: Write> Tar<'_, W> {
    fn entry(&mut self, name: &str, mode: u32, kind: Kind<'_>, data: &[u8]) -> io::Result<()> {
        let mut h = [0u8; BLOCK];
        let mut put = |at: usize, len: usize, v: &[u8]| -> io::Result<()> {
            if v.len() > len {
                return Err(io::Error::other(format!(
                    "tar field too long: {:?}",
                    String::from_utf8_lossy(v)
                )));
            }
            h[at..at + v.len()].copy_from_slice(v);
            Ok(())
        };
        let (flag, link, size) = match kind {
            Kind::File => (b'0', "", data.len()),
            Kind::Dir => (b'5', "", 0),
            Kind::Symlink(target) => (b'2', target, 0),
        };
        let name = if flag == b'5' {
            format!("{name}/")
        } else {
            name.to_owned()
        };
        put(0, 100, name.as_bytes())?;
        put(100, 8, format!("{mode:07o}\0").as_bytes())?;
        put(108, 8, b"0000000\0")?;
        put(116, 8, b"0000000\0")?;
        put(124, 12, format!("{size:011o}\0").as_bytes())?;
        put(136, 12, b"00000000000\0")?;
        put(156, 1, &[flag])?;
        put(157, 100, link.as_bytes())?;
        put(257, 6, b"ustar\0")?;
        put(263, 2, b"00")?;
        put(265, 32, b"root")?;
        put(297, 32, b"root")?;
        // The checksum is taken with its own field read as eight spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.out.write_all(&h)?;
        if size > 0 {
            self.out.write_all(data)?;
            let pad = (BLOCK - size % BLOCK) % BLOCK;
            self.out.write_all(&[0u8; BLOCK][..pad])?;
        }
        Ok(())
    }

    /// Two zero blocks end the archive.
    fn finish(&mut self) -> io::Result<()> {
        self.out.write_all(&[0u8; 2 * BLOCK])
    }
}

/// Where `.ci/build-image` leaves the images it built (`sysbox.tar`, `sysbox.json`, and the same
/// for `privileged`) unless this variable names another directory.
pub const EXPORTED_DIR_ENV: &str = "SYSRUNNER_IMAGE_DIR";
/// `.ci/build-image`'s work directory; its images are in `out/` there (when
/// [`EXPORTED_DIR_ENV`] is unset), as the script puts them.
pub const WORK_DIR_ENV: &str = "SYSRUNNER_IMAGE_WORK";
const WORK_DIR: &str = "/var/tmp/sysrunner-image";

/// The directory the built images are exported to.
pub fn exported_dir() -> std::path::PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    exported_dir_from(var(EXPORTED_DIR_ENV), var(WORK_DIR_ENV))
}

fn exported_dir_from(
    dir: Option<std::ffi::OsString>,
    work: Option<std::ffi::OsString>,
) -> std::path::PathBuf {
    match (dir, work) {
        (Some(d), _) => d.into(),
        (None, Some(w)) => std::path::PathBuf::from(w).join("out"),
        (None, None) => std::path::Path::new(WORK_DIR).join("out"),
    }
}

/// What a container of an image starts with, from `docker image inspect`'s `Config`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value`, in order.
    pub env: Vec<String>,
    /// Empty: `/`.
    pub working_dir: String,
    /// Empty: root. Containers here run as root only.
    pub user: String,
    pub stop_signal: Option<String>,
}

impl ImageConfig {
    /// Reads `docker image inspect IMAGE` output (a one-element array) or one element of it.
    pub fn from_inspect(json: &str) -> Result<ImageConfig, String> {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("image inspect output: {e}"))?;
        let image = if v.is_array() { &v[0] } else { &v };
        let c = &image["Config"];
        if !c.is_object() {
            return Err("image inspect output has no Config".into());
        }
        let strings = |key: &str| -> Result<Vec<String>, String> {
            match &c[key] {
                serde_json::Value::Null => Ok(Vec::new()),
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(String::from)
                            .ok_or_else(|| format!("Config.{key}: {x} is not a string"))
                    })
                    .collect(),
                other => Err(format!("Config.{key}: expected a list, got {other}")),
            }
        };
        let string = |key: &str| c[key].as_str().unwrap_or_default().to_owned();
        Ok(ImageConfig {
            entrypoint: strings("Entrypoint")?,
            cmd: strings("Cmd")?,
            env: strings("Env")?,
            working_dir: string("WorkingDir"),
            user: string("User"),
            stop_signal: c["StopSignal"].as_str().map(String::from),
        })
    }

    /// What PID 1 runs: `ENTRYPOINT` followed by `CMD`.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

/// The config of an image `.ci/build-image` exported (`sysbox`, `privileged`).
pub fn exported_config(kind: &str) -> Result<ImageConfig, String> {
    let path = exported_dir().join(format!("{kind}.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    ImageConfig::from_inspect(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Unpacks an image's filesystem tar (`docker export`) into `dest` (created, mode 0755 so a
/// mapped root can enter it), keeping owners, modes and links exactly as in the image.
pub fn unpack(tar: &Path, dest: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dest)?;
    std::fs::set_permissions(dest, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let out = Command::new("tar")
        .args(["--numeric-owner", "--same-owner", "-xpf"])
        .arg(tar)
        .arg("-C")
        .arg(dest)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "tar -xpf {}: {}",
            tar.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    // A tree from an earlier unpack may have been shifted: this one is not.
    match std::fs::remove_file(shift_record(dest)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Where the offset a tree's owners are shifted by is recorded: beside it, not in it, so the
/// image's own files are all a box sees.
fn shift_record(tree: &Path) -> std::path::PathBuf {
    let mut name = tree.as_os_str().to_owned();
    name.push(".shift");
    name.into()
}

/// An id shifted from a tree at offset `from` to offset `to`; ids outside the 65536 the tree
/// can hold (never in an image) stay as they are.
pub fn shifted(id: u32, from: u32, to: u32) -> u32 {
    match id.checked_sub(from) {
        Some(inside) if inside < 65_536 => inside + to,
        _ => id,
    }
}

/// Shifts every owner in `tree` to `offset` (`lchown(uid + offset, gid + offset)`), from
/// whatever offset it has now, and restores the setuid and setgid bits that chown clears.
/// File capabilities (`security.capability`) are not restored.
pub fn shift_tree(tree: &Path, offset: u32) -> io::Result<()> {
    let record = shift_record(tree);
    let from: u32 = match std::fs::read_to_string(&record) {
        Ok(s) => s.trim().parse().map_err(io::Error::other)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    if from != offset {
        shift_dir(tree, from, offset)?;
    }
    std::fs::write(&record, format!("{offset}\n"))
}

fn shift_dir(path: &Path, from: u32, to: u32) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(path)?;
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(nix::unistd::Uid::from_raw(shifted(meta.uid(), from, to))),
        Some(nix::unistd::Gid::from_raw(shifted(meta.gid(), from, to))),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io::Error::other(format!("lchown {}: {e}", path.display())))?;
    let ft = meta.file_type();
    if !ft.is_symlink() && meta.mode() & 0o6000 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    if ft.is_dir() {
        for e in std::fs::read_dir(path)? {
            shift_dir(&e?.path(), from, to)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_images_are_in_the_named_dir_else_in_the_work_dirs_out() {
        let os = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(
            exported_dir_from(os("/x/out2"), os("/w")),
            std::path::Path::new("/x/out2")
        );
        assert_eq!(
            exported_dir_from(None, os("/var/tmp/sysrunner-image-box")),
            std::path::Path::new("/var/tmp/sysrunner-image-box/out")
        );
        assert_eq!(
            exported_dir_from(None, None),
            std::path::Path::new("/var/tmp/sysrunner-image/out")
        );
    }

    #[test]
    fn an_images_config_is_read_from_docker_image_inspect() {
        let json = r#"[{"Id":"sha256:x","Config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","LANG=C.UTF-8"],
            "Entrypoint":["sysrunner","run"],"Cmd":null,"WorkingDir":"","User":"","StopSignal":"SIGTERM","Volumes":null}}]"#;
        let c = ImageConfig::from_inspect(json).unwrap();
        assert_eq!(c.argv(), ["sysrunner", "run"]);
        assert_eq!(c.env[1], "LANG=C.UTF-8");
        assert_eq!(c.stop_signal.as_deref(), Some("SIGTERM"));
        assert_eq!((c.working_dir.as_str(), c.user.as_str()), ("", ""));
        let c = ImageConfig::from_inspect(
            r#"{"Config":{"Entrypoint":null,"Cmd":["sleep","1"],"WorkingDir":"/w"}}"#,
        )
        .unwrap();
        assert_eq!(
            (c.argv(), c.working_dir.as_str()),
            (vec!["sleep".into(), "1".into()], "/w")
        );
        assert!(ImageConfig::from_inspect("[{}]").is_err());
        assert!(ImageConfig::from_inspect(r#"{"Config":{"Env":"PATH=/bin"}}"#).is_err());
    }

    #[test]
    fn ids_shift_between_offsets_and_foreign_ids_stay() {
        assert_eq!(shifted(0, 0, 100_000), 100_000);
        assert_eq!(shifted(1001, 0, 165_536), 166_537);
        assert_eq!(shifted(166_537, 165_536, 100_000), 101_001);
        assert_eq!(shifted(100_000, 100_000, 0), 0);
        // Not in the tree's range: left alone.
        assert_eq!(shifted(5, 100_000, 0), 5);
        assert_eq!(shifted(100_000 + 65_536, 100_000, 0), 165_536);
    }

    fn field(h: &[u8], at: usize, len: usize) -> String {
        String::from_utf8_lossy(&h[at..at + len])
            .trim_end_matches('\0')
            .to_owned()
    }

    /// Walks the archive the way a reader does: header, data rounded up to blocks, zero end.
    fn entries(tar: &[u8]) -> Vec<(String, u8, String, usize)> {
        let mut out = Vec::new();
        let mut at = 0;
        while tar[at..at + BLOCK].iter().any(|b| *b != 0) {
            let h = &tar[at..at + BLOCK];
            let stored = u32::from_str_radix(field(h, 148, 6).trim(), 8).unwrap();
            let sum: u32 = h
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u32::from(*b)
                    }
                })
                .sum();
            assert_eq!(stored, sum, "checksum of {}", field(h, 0, 100));
            assert_eq!(&h[257..263], b"ustar\0");
            let size = usize::from_str_radix(&field(h, 124, 11), 8).unwrap();
            out.push((field(h, 0, 100), h[156], field(h, 157, 100), size));
            at += BLOCK + size.div_ceil(BLOCK) * BLOCK;
        }
        assert_eq!(tar.len(), at + 2 * BLOCK, "two zero blocks end the archive");
        out
    }

    #[test]
    fn the_rootfs_has_busybox_its_applets_and_a_passwd() {
        let binary = vec![0x7fu8; 1000];
        let mut tar = Vec::new();
        busybox_rootfs(&binary, &["sh", "true", "busybox", "../x"], &mut tar).unwrap();
        assert_eq!(tar.len() % BLOCK, 0);
        let e = entries(&tar);
        assert!(e.contains(&("bin/busybox".into(), b'0', String::new(), 1000)));
        assert!(e.contains(&("bin/sh".into(), b'2', "busybox".into(), 0)));
        assert!(e.contains(&("bin/true".into(), b'2', "busybox".into(), 0)));
        assert!(e.contains(&("tmp/".into(), b'5', String::new(), 0)));
        assert!(e.iter().any(|x| x.0 == "etc/passwd"));
        assert!(!e.iter().any(|x| x.0 == "bin/../x"));
        let again = {
            let mut t = Vec::new();
            busybox_rootfs(&binary, &["sh", "true", "busybox", "../x"], &mut t).unwrap();
            t
        };
        assert_eq!(tar, again, "same input, same bytes");
    }
}
