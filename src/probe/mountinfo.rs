//! Parser for `/proc/self/mountinfo`: mount points, filesystem types, sources and rw/ro state, and
//! the mount a path lives on. Pure text in, records out; reads no file itself.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
    /// Writable: neither the mount nor the superblock is read-only.
    pub rw: bool,
    /// Superblock options (for cgroup v1: the controllers).
    #[serde(skip)]
    pub super_options: Vec<String>,
}

/// Undoes the octal escapes the kernel uses for space, tab, newline and backslash. Works on bytes,
/// so that a name in UTF-8 comes back as itself; `\ooo` past a byte (`\400` and up, which the
/// kernel never writes) stays as written.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        match octal {
            Some(v) if bytes[i] == b'\\' => {
                out.push(v);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    // Single spaces between fields, and a mount point that is a path: anything else is no line
    // the kernel wrote, and a mount point such as "" would be a parent of every path.
    if sep < 6 || fields.len() < sep + 3 || fields[..sep].iter().any(|f| f.is_empty()) {
        return None;
    }
    if !fields[4].starts_with('/') {
        return None;
    }
    let mount_opts = fields[5];
    let fstype = fields[sep + 1];
    let source = fields[sep + 2];
    let super_opts = fields.get(sep + 3).copied().unwrap_or("");
    let ro = |opts: &str| opts.split(',').any(|o| o == "ro");
    Some(Mount {
        mount_point: unescape(fields[4]),
        fstype: fstype.to_string(),
        source: unescape(source),
        rw: !ro(mount_opts) && !ro(super_opts),
        super_options: super_opts.split(',').map(str::to_string).collect(),
    })
}

/// The mount a path lives on: of the mounts whose mount point is the path or a parent of it, the
/// last one listed. mountinfo lists mounts in the order they were made, and a later mount on a
/// parent hides an earlier one below it (a bind on `/var/lib/docker`, then an overlay on
/// `/var/lib`: the path is on the overlay), so the longest prefix is not the answer.
pub fn mount_of<'a>(mounts: &'a [Mount], path: &str) -> Option<&'a Mount> {
    let within = |mp: &str| {
        mp == "/"
            || path == mp
            || (path.starts_with(mp) && path.as_bytes().get(mp.len()) == Some(&b'/'))
    };
    mounts.iter().rev().find(|m| within(&m.mount_point))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 22 0:26 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 30 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate
40 22 0:40 / /proc/sys rw,nosuid - fuse sysboxfs rw,user_id=0,group_id=0,default_permissions,allow_other
41 22 0:41 / /var/lib/docker rw,relatime - ext4 /dev/vdb rw
42 22 0:42 / /my\\040dir rw - tmpfs tmpfs ro
";

    #[test]
    fn parses_fields_and_rw_state() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 6);
        assert_eq!(m[2].mount_point, "/sys/fs/cgroup");
        assert_eq!(m[2].fstype, "cgroup2");
        assert!(!m[2].rw, "mount option ro");
        assert!(m[1].rw);
        assert_eq!(m[3].source, "sysboxfs");
        assert_eq!(m[5].mount_point, "/my dir");
        assert!(!m[5].rw, "superblock ro");
    }

    #[test]
    fn finds_the_mount_a_path_lives_on() {
        let m = parse(SAMPLE);
        assert_eq!(mount_of(&m, "/var/lib/docker").unwrap().fstype, "ext4");
        assert_eq!(
            mount_of(&m, "/var/lib/docker/overlay2").unwrap().source,
            "/dev/vdb"
        );
        assert_eq!(mount_of(&m, "/var/lib/dockerx").unwrap().source, "/dev/vda");
        assert_eq!(mount_of(&m, "/sys/fs/cgroup/x").unwrap().fstype, "cgroup2");
    }

    /// A later mount on a parent hides an earlier mount below it.
    #[test]
    fn a_mount_on_a_parent_made_later_hides_the_one_below_it() {
        let m = parse(&format!(
            "{SAMPLE}50 22 0:50 / /var/lib rw - overlay overlay rw,lowerdir=/a,upperdir=/b,workdir=/c\n"
        ));
        assert_eq!(mount_of(&m, "/var/lib/docker").unwrap().fstype, "overlay");
        assert_eq!(mount_of(&m, "/sys/fs/cgroup").unwrap().fstype, "cgroup2");
    }

    /// Found by tests/parsers_fuzz.rs: the unescaping went byte by byte into chars, so a mount
    /// point or source in UTF-8 came back as Latin-1 (`/ü` as `/Ã¼`), and `\777` overflowed.
    #[test]
    fn a_mount_point_in_utf8_is_itself() {
        let m = parse("42 22 0:42 / /dätä/ü\\040x rw - ext4 ¡src\\134 rw\n");
        assert_eq!(m[0].mount_point, "/dätä/ü x");
        assert_eq!(m[0].source, "¡src\\");
        let m = parse("42 22 0:42 / /a\\777\\400\\08 rw - ext4 x\\ rw\n");
        assert_eq!(m[0].mount_point, "/a\\777\\400\\08");
        assert_eq!(m[0].source, "x\\");
    }

    /// Found by tests/parsers_fuzz.rs: a line with two spaces in a row shifted its fields, and
    /// the mount point "" it then had was a parent of every path, `/var/lib/docker` included.
    #[test]
    fn a_line_whose_mount_point_is_no_path_is_skipped() {
        let m = parse(&format!(
            "{SAMPLE}915 900 0:65 /  /sys/module rw - fuse sysboxfs rw\n43 22 0:43 / x rw - tmpfs tmpfs rw\n"
        ));
        assert_eq!(m.len(), 6);
        assert_eq!(mount_of(&m, "/var/lib/docker").unwrap().source, "/dev/vdb");
    }

    #[test]
    fn skips_garbage_lines() {
        assert!(parse("not a mountinfo line\n\n").is_empty());
    }
}
