//! How a box's tmpfs mounts are mounted: the flags and filesystem data a plan carries, and
//! Docker's `PATH[:OPTIONS]` spec (`docker run --tmpfs`, a compose file's `tmpfs:` entries) read
//! the way dockerd reads it. Pure: parses and formats; mounting is the executor's (`mounts`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The mount flags of a tmpfs (mount(2)'s `MS_*`); all off is `rw,suid,dev,exec`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    pub ro: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
    pub noatime: bool,
    pub sync: bool,
}

/// What tmpfs takes for `size=`, `nr_inodes=` and `nr_blocks=`: a number, or a share of RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Amount {
    Exactly(u64),
    PercentOfRam(u64),
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Amount::Exactly(n) => write!(f, "{n}"),
            Amount::PercentOfRam(p) => write!(f, "{p}%"),
        }
    }
}

/// A tmpfs's flags and data. `None` leaves a value to the kernel: mode 1777, owned by the
/// mounting process (the box's root), half of the RAM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsOptions {
    pub flags: Flags,
    pub mode: Option<u32>,
    pub size: Option<Amount>,
    pub nr_inodes: Option<Amount>,
    pub nr_blocks: Option<Amount>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl TmpfsOptions {
    /// The harness's own tmpfs mounts (`/run`, `/etc/docker`, overlay scratch, an image box's
    /// `/dev`): nosuid and nodev, executable, as the box always mounted them.
    pub fn harness(mode: u32) -> TmpfsOptions {
        TmpfsOptions {
            flags: Flags {
                nosuid: true,
                nodev: true,
                ..Flags::default()
            },
            mode: Some(mode),
            ..TmpfsOptions::docker_defaults()
        }
    }

    /// What dockerd gives a `--tmpfs` mount the spec says nothing about: `rw,nosuid,nodev,noexec`
    /// (moby `daemon/oci_linux.go` puts these before the user's options), the kernel's mode and size.
    pub fn docker_defaults() -> TmpfsOptions {
        TmpfsOptions {
            flags: Flags {
                nosuid: true,
                nodev: true,
                noexec: true,
                ..Flags::default()
            },
            mode: None,
            size: None,
            nr_inodes: None,
            nr_blocks: None,
            uid: None,
            gid: None,
        }
    }

    /// A container's `/dev/shm` as dockerd mounts it (`--shm-size` unset): `nosuid,nodev,noexec`,
    /// mode 1777, 64 MiB (moby `daemon/container_operations_unix.go`, `config.DefaultShmSize`).
    pub fn docker_shm() -> TmpfsOptions {
        TmpfsOptions {
            mode: Some(0o1777),
            size: Some(Amount::Exactly(64 << 20)),
            ..TmpfsOptions::docker_defaults()
        }
    }

    /// The filesystem data for mount(2), in a fixed order: `mode=1777,size=67108864`.
    pub fn data(&self) -> String {
        let mut d = Vec::new();
        if let Some(m) = self.mode {
            d.push(format!("mode={m:o}"));
        }
        for (key, v) in [
            ("size", self.size),
            ("nr_inodes", self.nr_inodes),
            ("nr_blocks", self.nr_blocks),
        ] {
            if let Some(v) = v {
                d.push(format!("{key}={v}"));
            }
        }
        for (key, v) in [("uid", self.uid), ("gid", self.gid)] {
            if let Some(v) = v {
                d.push(format!("{key}={v}"));
            }
        }
        d.join(",")
    }
}

const EXPECTED: &str = "exec, noexec, suid, nosuid, dev, nodev, ro, rw, atime, noatime, sync, \
                        async, defaults, size=, mode=, uid=, gid=, nr_inodes=, nr_blocks=";

/// Options dockerd accepts for a tmpfs (moby `pkg/mount` flags and `validFlags`) that a box does
/// not imitate: propagation (a box's mounts are all private), the rarer atime and locking
/// flags, and NUMA policy.
const NOT_IMITATED: &[&str] = &[
    "dirsync",
    "remount",
    "mand",
    "nomand",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "bind",
    "rbind",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
    "mpol",
];

/// Reads a Docker tmpfs spec, `PATH[:OPTIONS]`: the path (everything before the first `:`) and
/// Docker's defaults changed by the comma-separated options in order, the last word on each
/// flag or value winning, as dockerd merges them. The error names the spec and the option.
pub fn parse_docker(spec: &str) -> Result<(PathBuf, TmpfsOptions), String> {
    let (path, options) = spec.split_once(':').unwrap_or((spec, ""));
    if !path.starts_with('/') {
        return Err(format!(
            "tmpfs {spec:?}: expected PATH[:OPTIONS] with an absolute PATH"
        ));
    }
    let mut o = TmpfsOptions::docker_defaults();
    // `PATH:` is the same as `PATH` to dockerd: an empty option string adds nothing.
    if options.is_empty() {
        return Ok((path.into(), o));
    }
    for opt in options.split(',') {
        let bad = |why: String| format!("tmpfs {spec:?}: option {opt:?}: {why}");
        let f = &mut o.flags;
        match opt.split_once('=') {
            None => match opt {
                "ro" => f.ro = true,
                "rw" => f.ro = false,
                "nosuid" => f.nosuid = true,
                "suid" => f.nosuid = false,
                "nodev" => f.nodev = true,
                "dev" => f.nodev = false,
                "noexec" => f.noexec = true,
                "exec" => f.noexec = false,
                "noatime" => f.noatime = true,
                "atime" => f.noatime = false,
                "sync" => f.sync = true,
                "async" => f.sync = false,
                // dockerd drops it while merging: it resets nothing.
                "defaults" => {}
                "" => return Err(bad("empty (two commas, or one at an end)".into())),
                "size" | "mode" | "uid" | "gid" | "nr_inodes" | "nr_blocks" => {
                    return Err(bad(format!("needs a value ({opt}=…)")));
                }
                _ => return Err(unknown(spec, opt)),
            },
            Some((key, value)) => match key {
                "size" => o.size = Some(amount(value).map_err(bad)?),
                "nr_inodes" => o.nr_inodes = Some(amount(value).map_err(bad)?),
                "nr_blocks" => o.nr_blocks = Some(amount(value).map_err(bad)?),
                "mode" => o.mode = Some(mode(value).map_err(bad)?),
                "uid" => o.uid = Some(id(value).map_err(bad)?),
                "gid" => o.gid = Some(id(value).map_err(bad)?),
                _ => return Err(unknown(spec, key)),
            },
        }
    }
    Ok((path.into(), o))
}

fn unknown(spec: &str, name: &str) -> String {
    if NOT_IMITATED.contains(&name) {
        format!(
            "tmpfs {spec:?}: option {name:?} is one dockerd accepts, but namespace boxes do not imitate it; expected one of {EXPECTED}"
        )
    } else {
        format!("tmpfs {spec:?}: unknown option {name:?}; expected one of {EXPECTED}")
    }
}

/// The kernel's `memparse` (k, m, g, t, p, e multiply by 1024 each, either case), or `N%` of RAM
/// as tmpfs also takes; decimal only.
fn amount(v: &str) -> Result<Amount, String> {
    let expected = || {
        format!(
            "expected a number, optionally with a k, m or g suffix, or a percentage of RAM (64m, 50%), not {v:?}"
        )
    };
    if let Some(p) = v.strip_suffix('%') {
        return digits(p).map(Amount::PercentOfRam).ok_or_else(expected);
    }
    let (num, shift) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_lowercase() {
                'k' => 10,
                'm' => 20,
                'g' => 30,
                't' => 40,
                'p' => 50,
                'e' => 60,
                _ => return Err(expected()),
            };
            (&v[..i], shift)
        }
        _ => (v, 0),
    };
    let n = digits(num).ok_or_else(expected)?;
    n.checked_mul(1u64 << shift)
        .map(Amount::Exactly)
        .ok_or_else(|| format!("{v:?} is more than 2^64 bytes"))
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn mode(v: &str) -> Result<u32, String> {
    u32::from_str_radix(v, 8)
        .ok()
        .filter(|m| *m <= 0o7777 && !v.starts_with('+'))
        .ok_or_else(|| format!("expected octal permission bits up to 7777 (1777), not {v:?}"))
}

fn id(v: &str) -> Result<u32, String> {
    digits(v)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("expected a numeric id, not {v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> TmpfsOptions {
        let (path, o) = parse_docker(spec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(path, PathBuf::from(spec.split(':').next().unwrap()));
        o
    }

    fn err(spec: &str) -> String {
        parse_docker(spec).expect_err(spec)
    }

    #[test]
    fn a_bare_path_is_rw_nosuid_nodev_noexec_with_the_kernels_mode_and_size() {
        for spec in ["/tmp", "/tmp:", "/tmp:defaults"] {
            let o = parse(spec);
            assert_eq!(o, TmpfsOptions::docker_defaults(), "{spec}");
            assert_eq!(
                o.flags,
                Flags {
                    nosuid: true,
                    nodev: true,
                    noexec: true,
                    ..Flags::default()
                }
            );
            assert_eq!(o.data(), "");
        }
    }

    #[test]
    fn exec_drops_noexec_and_size_and_mode_are_parsed() {
        let o = parse("/tmp:exec,mode=1777,size=1g");
        assert!(!o.flags.noexec && o.flags.nosuid && o.flags.nodev && !o.flags.ro);
        assert_eq!(o.mode, Some(0o1777));
        assert_eq!(o.size, Some(Amount::Exactly(1 << 30)));
        assert_eq!(o.data(), "mode=1777,size=1073741824");

        let o = parse("/run:size=65536k,uid=1001,gid=1001,mode=0700,nr_inodes=10k");
        assert!(o.flags.noexec);
        assert_eq!(o.size, Some(Amount::Exactly(64 << 20)));
        assert_eq!(
            (o.uid, o.gid, o.mode),
            (Some(1001), Some(1001), Some(0o700))
        );
        assert_eq!(
            o.data(),
            "mode=700,size=67108864,nr_inodes=10240,uid=1001,gid=1001"
        );
        assert_eq!(parse("/x:size=512").size, Some(Amount::Exactly(512)));
        assert_eq!(parse("/x:size=2M").size, Some(Amount::Exactly(2 << 20)));
        assert_eq!(parse("/x:size=50%").data(), "size=50%");
    }

    #[test]
    fn the_last_word_on_a_flag_or_value_wins() {
        let o = parse("/tmp:exec,noexec,ro,rw,suid,dev,noatime,size=1m,size=2m");
        assert!(o.flags.noexec && !o.flags.ro && !o.flags.nosuid && !o.flags.nodev);
        assert!(o.flags.noatime);
        assert_eq!(o.size, Some(Amount::Exactly(2 << 20)));
        let o = parse("/tmp:ro,sync,async");
        assert!(o.flags.ro && !o.flags.sync);
    }

    #[test]
    fn bad_options_are_refused_with_a_message_naming_them() {
        let e = err("/tmp:exec,bogus");
        assert!(e.contains("\"/tmp:exec,bogus\"") && e.contains("unknown option \"bogus\""));
        assert!(e.contains("expected one of exec, noexec"), "{e}");
        let e = err("/tmp:colour=red");
        assert!(e.contains("unknown option \"colour\""), "{e}");
        let e = err("/tmp:rshared");
        assert!(e.contains("\"rshared\" is one dockerd accepts"), "{e}");
        let e = err("/tmp:mpol=interleave");
        assert!(e.contains("\"mpol\" is one dockerd accepts"), "{e}");
        for (spec, words) in [
            ("/tmp:size=lots", "option \"size=lots\": expected a number"),
            ("/tmp:size=1x", "option \"size=1x\": expected a number"),
            ("/tmp:size=", "option \"size=\": expected a number"),
            ("/tmp:size=99999999999e", "more than 2^64 bytes"),
            ("/tmp:size", "option \"size\": needs a value (size=…)"),
            ("/tmp:mode=888", "option \"mode=888\": expected octal"),
            ("/tmp:mode=17777", "option \"mode=17777\": expected octal"),
            ("/tmp:uid=-1", "option \"uid=-1\": expected a numeric id"),
            ("/tmp:exec,,size=1m", "option \"\": empty"),
            ("/tmp:exec,", "option \"\": empty"),
            ("/tmp:exec:x", "unknown option \"exec:x\""),
            ("tmp:exec", "an absolute PATH"),
            (":exec", "an absolute PATH"),
        ] {
            let e = err(spec);
            assert!(e.contains(words), "{spec}: {e}");
        }
    }

    #[test]
    fn the_harness_tmpfs_stays_nosuid_nodev_and_executable() {
        let o = TmpfsOptions::harness(0o755);
        assert!(o.flags.nosuid && o.flags.nodev && !o.flags.noexec && !o.flags.ro);
        assert_eq!(o.data(), "mode=755");
    }
}
