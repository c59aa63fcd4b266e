//! A scale controller's stand: a [`Rig`] (a privileged-like box, the fake GitHub in its own
//! network namespace beside it) with a real dockerd in the box and a small runner image
//! ([`IMAGE`], see [`image::write_runner_rootfs`]) imported into it, so that a controller in the
//! box can start one runner container per job, on dockerd's default bridge, that reaches the fake
//! GitHub at [`Rig::url`] through the box's link and dockerd's NAT; and, on request
//! ([`ScaleRig::import_cache_image`]), a pull-through cache image ([`CACHE_IMAGE`]: Debian's
//! `docker-registry` in proxy mode, reaching nothing beyond its own loopback) for the controller
//! to make its cache container from. Owns the dockerd and every container in it: on drop the
//! containers are removed and dockerd is stopped (SIGTERM, then waited for) before the rig goes.
//! The test kit drives dockerd with its CLI; a controller under test talks to the socket
//! ([`SOCKET`], [`ScaleRig::socket`]).

use super::fake_github::FakeConfig;
use super::rig::{BOX_PATH, Rig};
use super::{BoxKind, boxes, docker, fake_runner, image};
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The runner image, as imported into the box's dockerd.
pub const IMAGE: &str = "sysrunner-scale-test:latest";
/// dockerd's socket as the box sees it.
pub const SOCKET: &str = docker::SOCKET;
/// The pull-through cache image, as [`ScaleRig::import_cache_image`] imports it.
pub const CACHE_IMAGE: &str = "sysrunner-scale-cache:test";
/// Debian's `docker-registry` package (distribution 2.8), the cache image's registry.
pub const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";
/// The cache image's entrypoint. distribution in proxy mode asks its remote's `/v2/` once at its
/// start and panics without an answer, and a test reaches no Docker Hub: the remote is busybox
/// `httpd` on the container's own loopback (any answer will do), in place of the
/// `REGISTRY_PROXY_REMOTEURL` the controller sets (which `docker inspect` still shows).
const CACHE_ENTRYPOINT: &str = "#!/bin/sh
httpd -p 127.0.0.1:5001 -h /tmp || exit 1
REGISTRY_PROXY_REMOTEURL=http://127.0.0.1:5001 exec /usr/bin/docker-registry serve /etc/docker/registry/config.yml
";
const CACHE_CONFIG: &str = "version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: :5000
proxy:
  remoteurl: http://127.0.0.1:5001
";
/// Where the cache image's tar is written, as the box sees it; removed once imported.
const CACHE_TAR_IN_BOX: &str = "/tmp/sysrunner-scale-cache.tar";
/// [`SOCKET`] as `DOCKER_HOST` names it, for a controller in the box.
pub const DOCKER_HOST: &str = "unix:///run/docker.sock";
/// How long dockerd may take to answer `/_ping`, and to stop after SIGTERM.
const DOCKERD_LIMIT: Duration = Duration::from_secs(120);
/// How long one CLI call of [`ScaleRig::docker`] may take (an import of the image included).
const CLI_LIMIT: Duration = Duration::from_secs(300);
/// Where the image's tar is written, as the box sees it (its `/tmp`); removed once imported.
const TAR_IN_BOX: &str = "/tmp/sysrunner-scale-image.tar";

/// How long [`ScaleRig::start`]'s parts took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartTimes {
    /// The rig: box, network, fake GitHub.
    pub rig: Duration,
    /// From dockerd's spawn to its `/_ping` (the image's tar is written meanwhile).
    pub dockerd: Duration,
    /// Writing the image's rootfs tar.
    pub image_build: Duration,
    /// `docker import` of it.
    pub image_import: Duration,
}

/// The rig, dockerd in its box, and the runner image in that dockerd.
pub struct ScaleRig {
    dockerd: Child,
    dockerd_log_path: PathBuf,
    pub rig: Rig,
    pub times: StartTimes,
}

impl ScaleRig {
    /// A [`Rig`] of [`BoxKind::PrivilegedLike`] with the fake GitHub of `cfg` and `sysrunner` (the
    /// binary under test), dockerd started in its box with [`docker::daemon_json`] (MTU 1400, the
    /// box link's), and [`IMAGE`] built from `sysrunner` and the fake runner release (its
    /// listener built with this kit) and imported.
    pub fn start(cfg: FakeConfig, sysrunner: &Path) -> Result<ScaleRig, String> {
        let t0 = Instant::now();
        let rig = Rig::start(BoxKind::PrivilegedLike, cfg, sysrunner)?;
        let t_rig = t0.elapsed();
        let b = &rig.b;
        b.write_file("/etc/docker/daemon.json", docker::daemon_json(1400))
            .map_err(|e| e.to_string())?;
        let dockerd_log_path = b.paths().state.join("dockerd.log");
        let log =
            std::fs::File::create(&dockerd_log_path).map_err(|e| format!("dockerd log: {e}"))?;
        let t1 = Instant::now();
        let dockerd = b
            .command(docker::DOCKERD)
            .args(["--host", DOCKER_HOST])
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn dockerd in the box: {e}"))?;
        // From here on `stop_dockerd` runs on every path, as drop does.
        let mut scale = ScaleRig {
            dockerd,
            dockerd_log_path,
            rig,
            times: StartTimes {
                rig: t_rig,
                dockerd: Duration::ZERO,
                image_build: Duration::ZERO,
                image_import: Duration::ZERO,
            },
        };
        let t2 = Instant::now();
        let tar = scale.rig.b.in_box(TAR_IN_BOX);
        write_image_tar(&tar, sysrunner)?;
        scale.times.image_build = t2.elapsed();
        let socket = scale.socket();
        let ping = docker::wait_for_ping(&socket, DOCKERD_LIMIT, || {
            matches!(scale.dockerd.try_wait(), Ok(None))
        });
        if let Err(e) = ping {
            return Err(format!("{e}\n--- dockerd log\n{}", scale.dockerd_log()));
        }
        scale.times.dockerd = t1.elapsed();
        let t3 = Instant::now();
        scale.try_docker(
            &format!(
                "import --change 'ENTRYPOINT [\"{}\",\"run\"]' \
                 --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin' \
                 --change 'LABEL io.github.sysrunner.runner-version={}' {TAR_IN_BOX} {IMAGE}",
                image::RUNNER_IMAGE_SYSRUNNER,
                fake_runner::VERSION
            ),
            &[],
            CLI_LIMIT,
        )?;
        scale.times.image_import = t3.elapsed();
        let _ = std::fs::remove_file(&tar);
        Ok(scale)
    }

    /// Builds [`CACHE_IMAGE`] and imports it: the busybox base, [`REGISTRY_BINARY`] and the
    /// libraries it loads, its configuration (proxy mode, port 5000, layers under
    /// `/var/lib/registry`) and [`CACHE_ENTRYPOINT`].
    pub fn import_cache_image(&self) -> Result<(), String> {
        if !Path::new(REGISTRY_BINARY).exists() {
            return Err(format!(
                "no {REGISTRY_BINARY}: apt-get install docker-registry (.ci/install-deps installs it)"
            ));
        }
        let tar = self.rig.b.in_box(CACHE_TAR_IN_BOX);
        write_cache_tar(&tar).map_err(|e| format!("cache image {}: {e}", tar.display()))?;
        let imported = self.try_docker(
            &format!(
                "import --change 'ENTRYPOINT [\"/usr/local/bin/cache-entrypoint\"]' \
                 --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
                 {CACHE_TAR_IN_BOX} {CACHE_IMAGE}"
            ),
            &[],
            CLI_LIMIT,
        );
        let _ = std::fs::remove_file(&tar);
        imported.map(|_| ())
    }

    /// dockerd's socket as the test process reaches it (through the box's root).
    pub fn socket(&self) -> PathBuf {
        self.rig.b.in_box(SOCKET)
    }

    /// `docker ARGS` in the box against this dockerd: `args` as a shell reads them, `env` added
    /// to the CLI's environment (a value a container gets with `-e NAME`, kept out of argv), at
    /// most `limit`. Its stdout, trimmed; else what failed, with its stderr.
    pub fn try_docker(
        &self,
        args: &str,
        env: &[(&str, &str)],
        limit: Duration,
    ) -> Result<String, String> {
        let mut cmd = self.rig.b.command("/bin/sh");
        cmd.env_clear()
            .env("HOME", "/root")
            .env("PATH", BOX_PATH)
            .envs(env.iter().copied())
            .arg("-c")
            .arg(format!("exec {} -H {DOCKER_HOST} {args}", docker::DOCKER));
        let out =
            boxes::output_within(&mut cmd, limit).map_err(|e| format!("docker {args}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "docker {args}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// `docker ARGS` in the box (see [`ScaleRig::try_docker`]); panics with its stderr when it
    /// fails.
    pub fn docker(&self, args: &str) -> String {
        self.try_docker(args, &[], CLI_LIMIT)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The full ids of the containers, running or not, with this label (`KEY` or `KEY=VALUE`, as
    /// `docker ps --filter label=` takes it); an empty filter lists them all.
    pub fn containers(&self, label_filter: &str) -> Vec<String> {
        let filter = if label_filter.is_empty() {
            String::new()
        } else {
            format!(
                " --filter {}",
                shell_quote(&format!("label={label_filter}"))
            )
        };
        self.docker(&format!("ps --all --quiet --no-trunc{filter}"))
            .lines()
            .map(String::from)
            .collect()
    }

    /// Waits at most `limit` for container `id` to exit: its exit code.
    pub fn wait(&self, id: &str, limit: Duration) -> Result<i32, String> {
        let code = self.try_docker(&format!("wait {}", shell_quote(id)), &[], limit)?;
        code.parse()
            .map_err(|_| format!("docker wait {id} answered {code:?}"))
    }

    /// Container `id`'s output so far (stdout and stderr), or why there is none.
    pub fn logs(&self, id: &str) -> String {
        self.try_docker(&format!("logs {} 2>&1", shell_quote(id)), &[], CLI_LIMIT)
            .unwrap_or_else(|e| e)
    }

    /// What dockerd has logged so far.
    pub fn dockerd_log(&self) -> String {
        std::fs::read_to_string(&self.dockerd_log_path).unwrap_or_default()
    }

    /// Removes every container, then stops dockerd: SIGTERM, at most [`DOCKERD_LIMIT`], then
    /// SIGKILL. What fails is said on stderr; the box's teardown ends whatever is left.
    fn stop_dockerd(&mut self) {
        if matches!(self.dockerd.try_wait(), Ok(None)) {
            match self.try_docker("ps --all --quiet", &[], CLI_LIMIT) {
                Ok(ids) if !ids.is_empty() => {
                    let ids = ids.split_whitespace().collect::<Vec<_>>().join(" ");
                    if let Err(e) = self.try_docker(&format!("rm --force {ids}"), &[], CLI_LIMIT) {
                        eprintln!("scale rig: {e}");
                    }
                }
                Ok(_) => {}
                Err(e) => eprintln!("scale rig: {e}"),
            }
            let _ = boxes::signal(self.dockerd.id(), Signal::SIGTERM);
        }
        match boxes::wait_within(&mut self.dockerd, DOCKERD_LIMIT) {
            Ok(Some(_)) => {}
            _ => {
                eprintln!("scale rig: dockerd ignored SIGTERM for {DOCKERD_LIMIT:?}; killed");
                let _ = self.dockerd.kill();
                let _ = self.dockerd.wait();
            }
        }
    }
}

impl Drop for ScaleRig {
    fn drop(&mut self) {
        self.stop_dockerd();
    }
}

/// The runner image's rootfs tar at `tar` (a host path into the box): `sysrunner` and a fresh
/// fake runner release.
fn write_image_tar(tar: &Path, sysrunner: &Path) -> Result<(), String> {
    let listener = super::binaries::locate_listener()?;
    let release = tempfile::tempdir().map_err(|e| format!("runner release: {e}"))?;
    fake_runner::install(release.path(), &listener).map_err(|e| format!("fake runner: {e}"))?;
    image::write_runner_rootfs(tar, sysrunner, release.path())
        .map_err(|e| format!("runner image {}: {e}", tar.display()))
}

/// The cache image's rootfs tar at `tar` (see [`ScaleRig::import_cache_image`]).
fn write_cache_tar(tar: &Path) -> std::io::Result<()> {
    use image::ImageFile;
    let busybox = std::fs::read(image::BUSYBOX)?;
    let list = std::process::Command::new(image::BUSYBOX)
        .arg("--list")
        .output()?;
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let applets: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    let registry = Path::new(REGISTRY_BINARY);
    let mut files = vec![
        ImageFile::read(registry, REGISTRY_BINARY)?,
        ImageFile {
            path: "usr/local/bin/cache-entrypoint".into(),
            mode: 0o755,
            data: CACHE_ENTRYPOINT.into(),
        },
        ImageFile {
            path: "etc/docker/registry/config.yml".into(),
            mode: 0o644,
            data: CACHE_CONFIG.into(),
        },
    ];
    for lib in image::shared_libraries(registry)? {
        files.push(ImageFile::read(&lib, &lib.to_string_lossy())?);
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(tar)?);
    image::runner_rootfs(&busybox, &applets, &files, &mut out)?;
    std::io::Write::flush(&mut out)
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_names_the_socket() {
        assert_eq!(DOCKER_HOST, format!("unix://{SOCKET}"));
    }

    #[test]
    fn a_shell_word_keeps_its_quotes() {
        assert_eq!(shell_quote("label=a=b c"), "'label=a=b c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
