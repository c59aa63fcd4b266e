//! The image's runner version against the newest one GitHub offers for the scope. Pure: it asks
//! neither GitHub nor the release; the lifecycle and `probe` hand it what they learnt.
//!
//! GitHub refuses to register a runner more than 30 days behind its newest release, and a JIT
//! runner (the default registration) cannot be registered with `--disableupdate`: once the image's
//! runner is behind, each life downloads and installs the new release before its job, and the
//! next life starts again from the image's. The scope's `actions/runners/downloads` endpoint
//! (GitHub and GHES alike) lists what GitHub offers, one entry per OS and architecture, each
//! named `actions-runner-<os>-<arch>-<version>.tar.gz`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A runner release: `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u64, pub u64, pub u64);

impl Version {
    /// `2.338.0` or `v2.338.0`; anything else is `None`.
    pub fn parse(s: &str) -> Option<Version> {
        let mut it = s.trim().trim_start_matches('v').split('.');
        let mut n = || it.next()?.parse::<u64>().ok();
        let v = Version(n()?, n()?, n()?);
        it.next().is_none().then_some(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The architecture name actions/runner's release files use for this machine.
pub fn runner_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// The version of the Linux release for `arch` among the downloads' file names (the newest, should
/// the list ever hold several).
pub fn offered<'a>(filenames: impl IntoIterator<Item = &'a str>, arch: &str) -> Option<Version> {
    let prefix = format!("actions-runner-linux-{arch}-");
    filenames
        .into_iter()
        .filter_map(|f| {
            let rest = f.strip_prefix(&prefix)?;
            Version::parse(rest.strip_suffix(".tar.gz")?)
        })
        .max()
}

/// What is known about the runner's version: in the health state and `probe --json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerVersions {
    /// The image's runner (`bin/Runner.Listener --version`, or its `Current runner version` line).
    pub image: Option<String>,
    /// The newest release GitHub offers for this scope and architecture.
    pub offered: Option<String>,
    /// `image < offered`; `None` until both are known.
    pub outdated: Option<bool>,
}

impl RunnerVersions {
    pub fn new(image: Option<Version>, offered: Option<Version>) -> RunnerVersions {
        RunnerVersions {
            image: image.map(|v| v.to_string()),
            offered: offered.map(|v| v.to_string()),
            outdated: image.zip(offered).map(|(i, o)| i < o),
        }
    }

    /// The warning to log when the image's runner is behind, naming both versions.
    pub fn warning(&self) -> Option<String> {
        match (self.outdated, &self.image, &self.offered) {
            (Some(true), Some(i), Some(o)) => Some(format!(
                "the image's actions/runner {i} is older than {o}, the newest GitHub offers: each \
                 life downloads and installs {o} before its job (a JIT runner cannot disable \
                 self-update), and GitHub refuses runners 30 days behind its newest; rebuild the \
                 image with RUNNER_VERSION={o}"
            )),
            _ => None,
        }
    }
}

/// The release's own answer to `bin/Runner.Listener --version`, run as `user` (uid, gid): the
/// listener may refuse root. `None` when it does not answer within 10 s or says no version.
pub fn of_release(runner_dir: &std::path::Path, user: Option<(u32, u32)>) -> Option<Version> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(runner_dir.join("bin/Runner.Listener"));
    cmd.arg("--version")
        .current_dir(runner_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd.spawn().ok()?;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < end => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    out.lines().find_map(Version::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order_numerically() {
        assert_eq!(Version::parse("2.338.0"), Some(Version(2, 338, 0)));
        assert_eq!(Version::parse("v2.99.1"), Some(Version(2, 99, 1)));
        for bad in ["2.338", "2.338.0.1", "x.1.2", "", "2.338.0-beta"] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
        assert!(Version::parse("2.99.0") < Version::parse("2.338.0"));
    }

    #[test]
    fn the_offered_version_is_the_linux_release_for_this_architecture() {
        let files = [
            "actions-runner-osx-x64-2.340.0.tar.gz",
            "actions-runner-linux-x64-2.339.1.tar.gz",
            "actions-runner-linux-arm64-2.339.0.tar.gz",
            "actions-runner-linux-arm-2.339.0.tar.gz",
            "actions-runner-win-x64-2.340.0.zip",
        ];
        assert_eq!(offered(files, "x64"), Some(Version(2, 339, 1)));
        assert_eq!(offered(files, "arm64"), Some(Version(2, 339, 0)));
        assert_eq!(offered(files, "riscv64"), None);
    }

    #[test]
    fn an_older_image_is_outdated_and_warned_about_with_both_versions() {
        let v = RunnerVersions::new(Version::parse("2.336.0"), Version::parse("2.338.0"));
        assert_eq!(v.outdated, Some(true));
        let w = v.warning().unwrap();
        assert!(w.contains("2.336.0") && w.contains("2.338.0"), "{w}");
        for (image, offered) in [("2.338.0", Some("2.338.0")), ("2.339.0", Some("2.338.0"))] {
            let v = RunnerVersions::new(Version::parse(image), offered.and_then(Version::parse));
            assert_eq!(v.outdated, Some(false));
            assert_eq!(v.warning(), None);
        }
        let unknown = RunnerVersions::new(Version::parse("2.336.0"), None);
        assert_eq!(unknown.outdated, None);
        assert_eq!(unknown.warning(), None);
    }
}
