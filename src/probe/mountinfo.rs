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

/// Undoes the octal escapes the kernel uses for space, tab, newline and backslash.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v as char);
            i += 4;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    out
}

pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    if sep < 6 || fields.len() < sep + 3 {
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

    #[test]
    fn skips_garbage_lines() {
        assert!(parse("not a mountinfo line\n\n").is_empty());
    }
}
