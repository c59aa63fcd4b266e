//! Images for boxes. A tiny container image made from the host's static busybox, for machines
//! that reach no image registry: a rootfs tar that `docker import` turns into an image; and a
//! small runner image on the same busybox (sysrunner, a runner release, the shared libraries they
//! load), for containers a controller starts. And an image's own filesystem made ready for a box
//! ([`unpack`], [`shift_tree`]), as sysbox prepares a container's: unpacked, its owners shifted
//! into the box's id range. Writes only the tar or tree it is asked for.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's busybox-static.
pub const BUSYBOX: &str = "/bin/busybox";
/// The name tests import the rootfs as.
pub const IMAGE: &str = "sysrunner-test/busybox:latest";

/// Writes the rootfs tar of [`BUSYBOX`] to `dest`: `bin/busybox`, a `bin/<applet>` symlink for
/// every applet it lists, `/etc/passwd` and `/etc/group` with root and nobody, and the usual
/// empty directories. Import it with `docker import <dest> <name>` and run e.g. `busybox true`.
pub fn write_busybox_rootfs(dest: &Path) -> io::Result<()> {
    let (busybox, list) = read_busybox()?;
    let mut file = io::BufWriter::new(std::fs::File::create(dest)?);
    busybox_rootfs(&busybox, &applets(&list), &mut file)?;
    file.flush()
}

/// [`BUSYBOX`]'s bytes and its `--list` of applets.
fn read_busybox() -> io::Result<(Vec<u8>, String)> {
    let busybox = std::fs::read(BUSYBOX)?;
    let out = Command::new(BUSYBOX).arg("--list").output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{BUSYBOX} --list failed: {}",
            out.status
        )));
    }
    Ok((busybox, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn applets(list: &str) -> Vec<&str> {
    list.lines()
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect()
}

const BUSYBOX_PASSWD: &[u8] =
    b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
const BUSYBOX_GROUP: &[u8] = b"root:x:0:\nnogroup:x:65534:\n";

/// The rootfs tar of a busybox binary with these applets, written to `out`.
pub fn busybox_rootfs(busybox: &[u8], applets: &[&str], out: &mut impl Write) -> io::Result<()> {
    let mut tar = Tar { out };
    busybox_base(&mut tar, busybox, applets, BUSYBOX_PASSWD, BUSYBOX_GROUP)?;
    tar.finish()
}

/// The directories every busybox rootfs has.
const BASE_DIRS: [(&str, u32); 8] = [
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("var", 0o755),
];

/// [`BASE_DIRS`], busybox and its applets in `bin/`, and these `etc/passwd` and `etc/group`.
fn busybox_base<W: Write>(
    tar: &mut Tar<'_, W>,
    busybox: &[u8],
    applets: &[&str],
    passwd: &[u8],
    group: &[u8],
) -> io::Result<()> {
    for (dir, mode) in BASE_DIRS {
        tar.entry(dir, mode, Kind::Dir, b"")?;
    }
    tar.entry("bin/busybox", 0o755, Kind::File, busybox)?;
    for a in applets {
        // Applet names are plain words; anything else (or busybox itself) is not linked.
        if *a != "busybox" && !a.contains('/') && *a != "." && *a != ".." {
            tar.entry(&format!("bin/{a}"), 0o777, Kind::Symlink("busybox"), b"")?;
        }
    }
    tar.entry("etc/passwd", 0o644, Kind::File, passwd)?;
    tar.entry("etc/group", 0o644, Kind::File, group)
}

/// Where a runner image holds sysrunner (its `ENTRYPOINT`).
pub const RUNNER_IMAGE_SYSRUNNER: &str = "/usr/local/bin/sysrunner";
/// Where a runner image holds the runner release (sysrunner's default `RUNNER_DIR`).
pub const RUNNER_IMAGE_RELEASE: &str = "/opt/actions-runner";
/// Debian's CA certificates, one file. A runner image needs them even against a fake GitHub over
/// plain HTTP: reqwest with rustls (sysrunner's client, the fake listener's) refuses to build a
/// client when the system has none ("No CA certificates were loaded from the system").
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The uid and gid of the `runner` user of a runner image, as in the project's images.
pub const RUNNER_UID: u32 = 1001;

/// A regular file of a runner image: its path there (relative to the root, no `..`), its mode
/// and its bytes. Directories above it that the image lacks are made, root's and 0755.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

impl ImageFile {
    /// The host file `source` (links followed), its mode kept, at `path` in the image.
    pub fn read(source: &Path, path: &str) -> io::Result<ImageFile> {
        use std::os::unix::fs::PermissionsExt;
        let err = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", source.display()));
        Ok(ImageFile {
            path: path.trim_start_matches('/').to_owned(),
            mode: std::fs::metadata(source).map_err(err)?.permissions().mode() & 0o7777,
            data: std::fs::read(source).map_err(err)?,
        })
    }
}

/// Writes a runner image's rootfs tar to `dest`, for `docker import` with `ENTRYPOINT
/// ["/usr/local/bin/sysrunner","run"]`: [`BUSYBOX`] and its applets, `sysrunner` at
/// [`RUNNER_IMAGE_SYSRUNNER`], the runner release directory `release` (files and directories
/// only; e.g. [`crate::fake_runner::install`]'s) at [`RUNNER_IMAGE_RELEASE`], and every shared
/// library that `sysrunner` and the release's ELF executables load, as `ldd` finds them on this
/// host and at the same paths (the dynamic loader too), the host's [`CA_BUNDLE`]; the rest as
/// [`runner_rootfs`] says.
pub fn write_runner_rootfs(dest: &Path, sysrunner: &Path, release: &Path) -> io::Result<()> {
    let (busybox, list) = read_busybox()?;
    let mut files = vec![
        ImageFile::read(sysrunner, RUNNER_IMAGE_SYSRUNNER)?,
        ImageFile::read(Path::new(CA_BUNDLE), CA_BUNDLE)?,
    ];
    let mut binaries = vec![sysrunner.to_owned()];
    release_files(
        release,
        Path::new(RUNNER_IMAGE_RELEASE),
        &mut files,
        &mut binaries,
    )?;
    for binary in &binaries {
        for lib in shared_libraries(binary)? {
            files.push(ImageFile::read(&lib, &lib.to_string_lossy())?);
        }
    }
    // Two binaries load the same libraries: each once.
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    let mut file = io::BufWriter::new(std::fs::File::create(dest)?);
    runner_rootfs(&busybox, &applets(&list), &files, &mut file)?;
    file.flush()
}

/// The files under `dir` as image files under `at`, and the ELF executables among them (host
/// paths) into `elves`.
fn release_files(
    dir: &Path,
    at: &Path,
    files: &mut Vec<ImageFile>,
    elves: &mut Vec<PathBuf>,
) -> io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let (source, target) = (e.path(), at.join(e.file_name()));
        let kind = e.file_type()?;
        if kind.is_dir() {
            release_files(&source, &target, files, elves)?;
        } else if kind.is_file() {
            let f = ImageFile::read(&source, &target.to_string_lossy())?;
            if f.mode & 0o111 != 0 && f.data.starts_with(b"\x7fELF") {
                elves.push(source);
            }
            files.push(f);
        } else {
            return Err(io::Error::other(format!(
                "{}: only files and directories go into a runner image",
                source.display()
            )));
        }
    }
    Ok(())
}

const RUNNER_PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n\
nobody:x:65534:65534:nobody:/:/bin/false\n\
runner:x:1001:1001:runner:/home/runner:/bin/sh\n";
const RUNNER_GROUP: &[u8] = b"root:x:0:\nnogroup:x:65534:\nrunner:x:1001:\n";

/// The rootfs tar of a runner image, written to `out`: a busybox rootfs (as [`busybox_rootfs`])
/// whose passwd and group also hold `runner` ([`RUNNER_UID`], group `runner`), with its home
/// `/home/runner` (its own, 0755), `/run`, `/var/lib/sysrunner`, `/usr/local/bin`, and `files`
/// in their order (each path once), after the directories they need.
pub fn runner_rootfs(
    busybox: &[u8],
    applets: &[&str],
    files: &[ImageFile],
    out: &mut impl Write,
) -> io::Result<()> {
    for f in files {
        let plain = Path::new(&f.path)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain || f.path.is_empty() {
            return Err(io::Error::other(format!(
                "{:?}: not a relative path below the image's root",
                f.path
            )));
        }
    }
    let mut tar = Tar { out };
    busybox_base(&mut tar, busybox, applets, RUNNER_PASSWD, RUNNER_GROUP)?;
    let mut made: BTreeSet<&str> = BASE_DIRS.iter().map(|(d, _)| *d).collect();
    for (dir, mode, owner) in [
        ("home", 0o755, Owner::Root),
        ("home/runner", 0o755, Owner::Runner),
        ("run", 0o755, Owner::Root),
        ("usr", 0o755, Owner::Root),
        ("usr/local", 0o755, Owner::Root),
        ("usr/local/bin", 0o755, Owner::Root),
        ("var/lib", 0o755, Owner::Root),
        ("var/lib/sysrunner", 0o755, Owner::Root),
    ] {
        tar.entry_owned(dir, mode, owner, Kind::Dir, b"")?;
        made.insert(dir);
    }
    let parents: BTreeSet<&str> = files
        .iter()
        .flat_map(|f| Path::new(&f.path).ancestors().skip(1))
        .filter_map(Path::to_str)
        .filter(|p| !p.is_empty() && !made.contains(p))
        .collect();
    // Sorted, a directory comes before everything below it.
    for dir in parents {
        tar.entry(dir, 0o755, Kind::Dir, b"")?;
    }
    for f in files {
        tar.entry(&f.path, f.mode, Kind::File, &f.data)?;
    }
    tar.finish()
}

/// The shared libraries `binary` loads, as this host's `ldd` resolves them: absolute paths, the
/// dynamic loader among them; none for a static binary. A library `ldd` cannot find is an error.
pub fn shared_libraries(binary: &Path) -> io::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // glibc's ldd says this (and exits 1) for a static binary.
    if !out.status.success()
        && (stdout.contains("not a dynamic") || stderr.contains("not a dynamic"))
    {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ldd {}: {}: {stderr}",
            binary.display(),
            out.status
        )));
    }
    parse_ldd(&stdout).map_err(|e| io::Error::other(format!("ldd {}: {e}", binary.display())))
}

/// The paths in `ldd` output: `name => /path (0x…)` lines and the loader's `/path (0x…)` line;
/// the vDSO (`linux-vdso.so.1 (0x…)`) has no file and is left out.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("{} not found", name.trim()));
                }
                rest
            }
            None => line,
        };
        let path = target.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        } else if line.contains("=>") {
            return Err(format!("cannot read the line {line:?}"));
        }
    }
    Ok(libs)
}

/// Who owns an entry (user and group alike).
#[derive(Debug, Clone, Copy)]
enum Owner {
    Root,
    /// A runner image's `runner` ([`RUNNER_UID`]).
    Runner,
}

impl Owner {
    fn id_and_name(self) -> (u32, &'static [u8]) {
        match self {
            Owner::Root => (0, b"root"),
            Owner::Runner => (RUNNER_UID, b"runner"),
        }
    }
}

enum Kind<'a> {
    File,
    Dir,
    Symlink(&'a str),
}

/// A ustar (POSIX.1-1988) writer for the few entry kinds a rootfs needs. Every entry has mtime 0
/// and is root's unless said otherwise, so the same input gives the same bytes.
struct Tar<'w, W: Write> {
    out: &'w mut W,
}

const BLOCK: usize = 512;

impl<W: Write> Tar<'_, W> {
    fn entry(&mut self, name: &str, mode: u32, kind: Kind<'_>, data: &[u8]) -> io::Result<()> {
        self.entry_owned(name, mode, Owner::Root, kind, data)
    }

    fn entry_owned(
        &mut self,
        name: &str,
        mode: u32,
        owner: Owner,
        kind: Kind<'_>,
        data: &[u8],
    ) -> io::Result<()> {
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
        let (id, user) = owner.id_and_name();
        put(108, 8, format!("{id:07o}\0").as_bytes())?;
        put(116, 8, format!("{id:07o}\0").as_bytes())?;
        put(124, 12, format!("{size:011o}\0").as_bytes())?;
        put(136, 12, b"00000000000\0")?;
        put(156, 1, &[flag])?;
        put(157, 100, link.as_bytes())?;
        put(257, 6, b"ustar\0")?;
        put(263, 2, b"00")?;
        put(265, 32, user)?;
        put(297, 32, user)?;
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
    fn ldd_output_gives_the_libraries_and_the_loader_but_not_the_vdso() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd5b1e2000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0e048d6000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e0353e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0e04909000)
";
        assert_eq!(
            parse_ldd(out).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        let missing = parse_ldd("\tlibfoo.so.2 => not found\n").unwrap_err();
        assert!(missing.contains("libfoo.so.2"), "{missing}");
    }

    #[test]
    fn the_runner_rootfs_has_the_runner_user_its_home_and_the_files_below_their_dirs() {
        let file = |path: &str, len| ImageFile {
            path: path.into(),
            mode: 0o755,
            data: vec![1; len],
        };
        let files = [
            file("lib64/ld-linux-x86-64.so.2", 600),
            file("opt/actions-runner/bin/Runner.Listener", 10),
            file("usr/local/bin/sysrunner", 10),
        ];
        let mut tar = Vec::new();
        runner_rootfs(&[0x7f; 100], &["sh"], &files, &mut tar).unwrap();
        let e = entries(&tar);
        let at = |name: &str| {
            e.iter()
                .position(|x| x.0 == name)
                .unwrap_or_else(|| panic!("{name} in {e:?}"))
        };
        // Entry `name`'s header and data: every entry before it is a header and its blocks.
        let block = |name: &str| {
            let start: usize = e[..at(name)]
                .iter()
                .map(|x| BLOCK + x.3.div_ceil(BLOCK) * BLOCK)
                .sum();
            let data = start + BLOCK;
            (&tar[start..data], &tar[data..data + e[at(name)].3])
        };
        let header = |name: &str| block(name).0;
        for dir in ["run/", "var/lib/sysrunner/", "tmp/", "home/runner/"] {
            assert_eq!(e[at(dir)].1, b'5', "{dir}");
        }
        assert!(at("opt/") < at("opt/actions-runner/"));
        assert!(at("opt/actions-runner/bin/") < at("opt/actions-runner/bin/Runner.Listener"));
        assert!(at("lib64/") < at("lib64/ld-linux-x86-64.so.2"));
        assert_eq!(e[at("lib64/ld-linux-x86-64.so.2")].3, 600);
        assert_eq!(
            e.iter().filter(|x| x.0 == "usr/local/bin/").count(),
            1,
            "each directory once"
        );
        let home = header("home/runner/");
        assert_eq!(field(home, 108, 8), "0001751", "uid 1001");
        assert_eq!(field(home, 116, 8), "0001751", "gid 1001");
        assert_eq!(field(home, 265, 32), "runner");
        assert_eq!(field(header("tmp/"), 100, 8), "0001777");
        assert_eq!(field(header("run/"), 108, 8), "0000000");
        let passwd = String::from_utf8_lossy(block("etc/passwd").1);
        assert!(
            passwd.contains("runner:x:1001:1001:runner:/home/runner:/bin/sh\n"),
            "{passwd}"
        );
        let mut out = Vec::new();
        assert!(runner_rootfs(&[0x7f; 100], &[], &[file("../etc/shadow", 1)], &mut out).is_err());
        assert!(out.is_empty(), "nothing written for a bad path");
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
