//! The images `.ci/build-image` built (Dockerfile.sysbox and Dockerfile, Debian 13 base, the
//! distribution's Docker, the fake runner and a prebuilt sysrunner through --build-context), run
//! the way their runtimes run them: a container of the image (the testkit's `Container`) whose
//! root is an overlay of the image's own filesystem, unpacked and uid-shifted, with its writable
//! layer on disk, the compose file's tmpfs mounts, Docker's hosts, hostname and resolv.conf, and
//! Docker's embedded resolver imitated at 127.0.0.11. The sysbox image's entrypoint is PID 1 and
//! runs a job against the fake GitHub, which it reaches by name (`http://github.fake:8080`), in
//! two starts of the same container, as `restart: always` makes them; the privileged image's
//! probe says `privileged` and its dockerd answers. Needs root and the exported images; skips (or
//! fails in CI) through `testkit::require`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use sysrunner_testkit::boxes::{Container, RestartMode};
use sysrunner_testkit::fake_github::{FakeConfig, JobResult, JobStatus};
use sysrunner_testkit::rig::{GITHUB_NAME, ImageRig, ImageRigSpec};
use sysrunner_testkit::{self as testkit, BoxKind, Need, image};

/// The image's own sysrunner (release build, no test kit): its entrypoint.
const ENTRYPOINT: &str = "/usr/local/bin/sysrunner";
const LIFE: Duration = Duration::from_secs(180);

fn ready(test: &str, needs: &[Need]) -> Option<testkit::lock::Lock> {
    testkit::require(test, needs).then(testkit::serial)
}

/// The tmpfs mounts the compose file gives the image's container, as Docker mounts them.
fn compose_tmpfs(file: &str) -> Vec<String> {
    let svc = testkit::compose::runner_service(Path::new(env!("CARGO_MANIFEST_DIR")), file)
        .unwrap_or_else(|e| panic!("{e}"));
    let entries = testkit::compose::tmpfs_entries(&svc);
    assert!(!entries.is_empty(), "{file} has no tmpfs mounts: {svc}");
    entries
}

fn config(kind: &str) -> Value {
    let path = image::exported_dir().join(format!("{kind}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap();
    v[0]["Config"].clone()
}

/// The image's filesystem in a fresh directory (removed on drop): `<dir>/rootfs`.
fn unpack(kind: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("sysrunner-image-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let tree = dir.path().join("rootfs");
    let t = Instant::now();
    image::unpack(&image::exported_dir().join(format!("{kind}.tar")), &tree).unwrap();
    eprintln!("unpacked the {kind} image in {:.1?}", t.elapsed());
    // tempdir is 0700: a mapped root must be able to enter it.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    (dir, tree)
}

#[test]
fn both_images_declare_the_entrypoint_stop_signal_healthcheck_and_only_their_difference() {
    let Some(_serial) = ready("image config", &[Need::Images]) else {
        return;
    };
    for kind in ["sysbox", "privileged"] {
        let c = config(kind);
        assert_eq!(
            c["Entrypoint"],
            serde_json::json!(["sysrunner", "run"]),
            "{kind}"
        );
        assert_eq!(c["StopSignal"], "SIGTERM", "{kind}");
        assert_eq!(
            c["Healthcheck"]["Test"],
            serde_json::json!(["CMD", "sysrunner", "healthcheck"]),
            "{kind}"
        );
        assert!(
            c["Healthcheck"]["StartPeriod"].as_u64().unwrap_or(0) >= 60_000_000_000,
            "{kind}: a start period of at least a minute covers dockerd's start: {c}"
        );
    }
    // The one difference: privileged needs a volume for dockerd's data root; sysbox mounts its own.
    let volumes = |kind: &str| config(kind)["Volumes"].clone();
    assert_eq!(volumes("sysbox"), Value::Null);
    assert_eq!(
        volumes("privileged"),
        serde_json::json!({"/var/lib/docker": {}})
    );
}

/// In the image: what the Dockerfile promises, checked where a job would see it.
const IMAGE_HOLDS: &str = r#"
set -e
id runner | grep -q 'uid=1001(runner)'
id -nG runner | tr ' ' '\n' | grep -qx docker
for c in dockerd docker containerd runc iptables fuse-overlayfs sudo git curl jq busybox make gcc; do
  command -v "$c" >/dev/null || { echo "missing $c"; exit 1; }
done
docker buildx version >/dev/null
docker compose version >/dev/null
test "$(stat -c %u:%g /opt/actions-runner /opt/actions-runner/bin/Runner.Listener)" = "$(printf '0:0\n0:0')"
test -z "$(find /opt/actions-runner -perm /022)"
test -x /usr/local/bin/sysrunner
echo image-ok
"#;

/// In the running container (`docker exec`): what Docker and the runtime give it. `HOST`, `IP`
/// and `PEER` are the container's hostname and address, and the fake GitHub's address.
const CONTAINER_HOLDS: &str = r#"
set -e
test "$(stat -f -c %T /)" = overlayfs
test "$(stat -f -c %T /var/lib/docker)" != overlayfs
test "$(cat /proc/1/cmdline | tr '\0' ' ')" = "sysrunner run "
test "$(hostname)" = "$HOST"
getent hosts "$HOST" | grep -q "^$IP "
grep -qx 'nameserver 127.0.0.11' /etc/resolv.conf
getent hosts github.fake | grep -q "^$PEER "
! getent hosts github.com
echo container-ok
"#;

/// The first life's job: docker run and docker build on the inner dockerd, the container's MTU,
/// then litter everywhere a job can write (as root too, through sudo, outside every directory a
/// reset would know of: only the life sandbox's fresh root takes it away).
const LITTER: &[&str] = &[
    "echo user=$(id -un)",
    "mkdir -p r/bin && cp /bin/busybox r/bin/ && for a in $(r/bin/busybox --list); do [ $a = busybox ] || ln -s busybox r/bin/$a; done && tar -C r -c . | docker import - job-base >/dev/null",
    "docker run --rm job-base sh -c 'echo hello-from-the-inner-docker mtu=$(cat /sys/class/net/eth0/mtu)'",
    "printf 'FROM job-base\\nRUN echo built-by-the-inner-buildkit > /built\\n' > Dockerfile && docker build -q -t job-built . >/dev/null && docker run --rm job-built cat /built",
    "! cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -q 'ghp_fak[e]'",
    // Jobs run what they put in /tmp (go test, JNI libraries, downloaded scripts).
    "cp /bin/true /tmp/job-binary && /tmp/job-binary && echo ran-a-binary-from-tmp",
    // sudo finds the container's hostname in /etc/hosts (it warned "unable to resolve host"
    // when the image's empty hosts file was all there was).
    "sudo -n sh -c 'echo root-was-here > /var/tmp/written-by-life-one' 2>sudo.err; cat sudo.err; ! grep -q 'unable to resolve' sudo.err && echo sudo-resolves-its-host",
    "getent hosts github.fake >/dev/null && echo the-job-resolves-github",
    "echo litter > \"$HOME/litter\" && echo litter > /tmp/litter && echo litter > litter-in-work && docker tag job-base left-by-life-one",
];

/// The second life's job: nothing of the first is there, not even what root wrote outside every
/// directory a reset knows of (the container's writable layer would keep it; the life sandbox's
/// root is dropped with the life).
const CLEAN: &[&str] = &[
    "test ! -e \"$HOME/litter\"",
    "test ! -e /tmp/litter",
    "test ! -e litter-in-work",
    "test -z \"$(docker images -q left-by-life-one)\"",
    "test ! -e /var/tmp/written-by-life-one && echo root-left-nothing-in-var-tmp",
    "echo second-life-clean",
];

#[test]
fn the_sysbox_image_runs_a_job_with_docker_and_its_second_life_finds_nothing_of_the_first() {
    let mut needs = sysrunner_testkit::gate::BOX_WITH_DOCKERD.to_vec();
    needs.extend([Need::Images, Need::Compose]);
    let Some(_serial) = ready("sysbox image", &needs) else {
        return;
    };
    let (dir, tree) = unpack("sysbox");
    let name = "sysrunner-image";
    let mut env = ImageRig::settings(name);
    env.insert("RUNNER_SUDO".into(), "true".into());
    assert!(env["GITHUB_URL"].starts_with(&format!("http://{GITHUB_NAME}:")));
    let image = image::exported_config("sysbox").unwrap();
    let mut r = ImageRig::start(ImageRigSpec {
        kind: BoxKind::SysboxLike,
        fake: FakeConfig::default(),
        tree: &tree,
        image: &image,
        tmpfs: &compose_tmpfs("compose.sysbox.yml"),
        mode: RestartMode::Docker,
        env: &env,
    })
    .unwrap_or_else(|e| panic!("{e}"));

    // The first start: the entrypoint registers and waits for a job; meanwhile, `docker exec`.
    let log_1 = dir.path().join("life-1.log");
    let t = Instant::now();
    r.start_life(&log_1).unwrap();
    let online = r.until(LIFE, |r| {
        r.runners()
            .iter()
            .any(|x| x.name == name && x.status == "online")
    });
    assert!(
        online,
        "the runner never came online:\n{}",
        std::fs::read_to_string(&log_1).unwrap_or_default()
    );
    let holds = r.c.run_shell(IMAGE_HOLDS).unwrap();
    assert!(holds.contains("image-ok"), "{holds}");
    let net = r.c.network().unwrap();
    let script = format!(
        "HOST={} IP={} PEER={}\n{CONTAINER_HOLDS}",
        r.c.hostname(),
        net.box_ip,
        net.peer_ip
    );
    let holds = r.c.run_shell(&script).unwrap();
    assert!(holds.contains("container-ok"), "{holds}");
    // The image's HEALTHCHECK, from the container: it pings the life's dockerd.
    let health =
        r.c.output(r.c.command(ENTRYPOINT).unwrap().arg("healthcheck"))
            .unwrap();
    assert!(
        health.status.success(),
        "healthcheck while listening: {}{}",
        String::from_utf8_lossy(&health.stdout),
        String::from_utf8_lossy(&health.stderr)
    );
    let probe =
        r.c.output(r.c.command(ENTRYPOINT).unwrap().args(["probe", "--json"]))
            .unwrap();
    let report: Value = serde_json::from_slice(&probe.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&probe.stdout)));
    // A sysbox-like box has a user namespace but no sysboxfs: the userns verdict.
    assert_eq!(report["runtime"], "userns", "{report}");

    let job = r.queue(name, "litter", LITTER);
    let (code, log) = r.end_life(&log_1, LIFE);
    eprintln!("first life: {:.1?}", t.elapsed());
    let job = r.job(job.id);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(job.status, JobStatus::Completed, "{log}");
    assert_eq!(
        job.result,
        Some(JobResult::Succeeded),
        "job output:\n{}\nlog:\n{log}",
        job.output
    );
    for want in [
        "user=runner",
        "hello-from-the-inner-docker mtu=1400",
        "built-by-the-inner-buildkit",
        "ran-a-binary-from-tmp",
        "sudo-resolves-its-host",
        "the-job-resolves-github",
    ] {
        assert!(
            job.output.contains(want),
            "{want:?} missing:\n{}",
            job.output
        );
    }
    for marker in [
        "dockerd ready in",
        "runner listening",
        "dockerd stopped",
        "exit 0",
    ] {
        assert!(log.contains(marker), "{marker:?} missing:\n{log}");
    }
    assert!(!log.contains("ghp_fake"), "the token reached the log");
    r.assert_ended_clean(&log);
    assert!(
        log.contains("phase=\"sandbox\""),
        "the life was not sandboxed:\n{log}"
    );
    // The runner ran from its release in the life's root: nothing restored, nothing copied.
    assert!(!log.contains("pristine"), "{log}");
    assert!(
        !r.c.upper().join("var/tmp/written-by-life-one").exists(),
        "root's write reached the container's layer"
    );

    // `restart: always`: the same container (its layer, its /var/lib/docker) starts again.
    let job = r.queue(name, "clean", CLEAN);
    let t = Instant::now();
    let (code, log) = r.life(&dir.path().join("life-2.log"), LIFE);
    eprintln!("second life: {:.1?}", t.elapsed());
    let job = r.job(job.id);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        job.result,
        Some(JobResult::Succeeded),
        "job output:\n{}\nlog:\n{log}",
        job.output
    );
    assert!(job.output.contains("second-life-clean"), "{}", job.output);
    assert!(
        job.output.contains("root-left-nothing-in-var-tmp"),
        "{}",
        job.output
    );
    assert!(r.runners().is_empty());
    assert_eq!(r.c.starts(), 2);
    drop(r);
    drop(dir);
}

#[test]
fn the_privileged_image_is_seen_as_privileged_and_its_dockerd_runs() {
    let mut needs = sysrunner_testkit::gate::BOX_WITH_DOCKERD.to_vec();
    needs.extend([Need::Images, Need::Compose]);
    let Some(_serial) = ready("privileged image", &needs) else {
        return;
    };
    let (dir, tree) = unpack("privileged");
    // PID 1 is the kit's idle init, not the entrypoint: this test checks the probe and dockerd
    // from `docker exec`, not a life.
    let mut builder = Container::builder(BoxKind::PrivilegedLike, &tree)
        .image(&image::exported_config("privileged").unwrap())
        .idle();
    for spec in compose_tmpfs("compose.privileged.yml") {
        builder = builder.tmpfs_docker(&spec).unwrap();
    }
    let mut c = builder.create().unwrap();
    c.start(&dir.path().join("container.log")).unwrap();
    assert_eq!(c.run_shell("stat -f -c %T /").unwrap().trim(), "overlayfs");
    let probe = c
        .output(c.command(ENTRYPOINT).unwrap().args(["probe", "--json"]))
        .unwrap();
    let report: Value = serde_json::from_slice(&probe.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&probe.stdout)));
    assert_eq!(report["runtime"], "privileged", "{report}");
    let check = c
        .output(
            c.command(ENTRYPOINT)
                .unwrap()
                .args([
                    "dockerd-check",
                    "docker",
                    "version",
                    "--format",
                    "server={{.Server.Version}}",
                ])
                .env("NO_COLOR", "1")
                .stdin(Stdio::null()),
        )
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{out}");
    assert!(out.contains("server=26."), "{out}");
    c.remove().unwrap();
}

/// Both images name their actions/runner version in the label `sysrunner scale` compares with
/// the newest release GitHub offers (here the fake runner's, passed as RUNNER_VERSION).
#[test]
fn both_images_label_their_runner_version() {
    let Some(_serial) = ready("image labels", &[Need::Images]) else {
        return;
    };
    for kind in ["sysbox", "privileged"] {
        let path = image::exported_dir().join(format!("{kind}.json"));
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let label = &v[0]["Config"]["Labels"][sysrunner::scale::spec::LABEL_RUNNER_VERSION];
        assert_eq!(
            label.as_str(),
            Some(sysrunner_testkit::fake_runner::VERSION),
            "{kind}: {}",
            v[0]["Config"]["Labels"]
        );
    }
}

/// The default path end to end: the sysbox image, each life in its sandbox (its own network
/// namespace, its dockerd behind the life's NAT), and a pull-through cache beside the container
/// known by name, as compose's `cache` is. The life asks the cache, its dockerd takes it as its
/// mirror, and a Docker Hub short name is pulled through it: the cache serves every layer.
#[test]
fn a_sandboxed_life_of_the_sysbox_image_pulls_through_the_cache_by_name() {
    use sysrunner_testkit::registry::{self, Cache, Upstream};
    let mut needs = sysrunner_testkit::gate::BOX_WITH_DOCKERD.to_vec();
    needs.extend([Need::Images]);
    if let Some(why) = registry::missing() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "image cache: {why}"
        );
        eprintln!("skipped: image cache: {why}");
        return;
    }
    let Some(_serial) = ready("sysbox image with a cache", &needs) else {
        return;
    };
    let (dir, tree) = unpack("sysbox");
    let name = "sysrunner-cached";
    let mut env = ImageRig::settings(name);
    let url = format!("http://{GITHUB_NAME}:{}", registry::PORT);
    env.insert("DOCKER_REGISTRY_CACHE".into(), url.clone());
    let image = image::exported_config("sysbox").unwrap();
    let mut r = ImageRig::start(ImageRigSpec {
        kind: BoxKind::SysboxLike,
        fake: FakeConfig::default(),
        tree: &tree,
        image: &image,
        tmpfs: &compose_tmpfs("compose.sysbox.yml"),
        mode: RestartMode::Docker,
        env: &env,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let up = Upstream::start().unwrap_or_else(|e| panic!("{e}"));
    let net = r.c.network().unwrap();
    let cache = Cache::start(&up, &net.peer_path(), net.peer_ip).unwrap_or_else(|e| panic!("{e}"));
    let log_path = dir.path().join("life.log");
    r.start_life(&log_path).unwrap();
    let online = r.until(LIFE, |r| {
        r.runners()
            .iter()
            .any(|x| x.name == name && x.status == "online")
    });
    assert!(
        online,
        "the runner never came online:\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    // The image's HEALTHCHECK says where the life pulls from (Docker keeps it in the health log).
    let health =
        r.c.output(r.c.command(ENTRYPOINT).unwrap().arg("healthcheck"))
            .unwrap();
    let said = String::from_utf8_lossy(&health.stdout);
    assert!(
        health.status.success()
            && said.contains(&format!(
                "registry: pulls Docker Hub images through the cache {url}"
            )),
        "healthcheck: {said}{}",
        String::from_utf8_lossy(&health.stderr)
    );
    let job = r.queue(
        name,
        "pull-through-the-cache",
        &[
            "test -z \"$(docker images -q)\" && echo no-images-at-start",
            "echo mirrors=$(docker info --format '{{json .RegistryConfig.Mirrors}}')",
            &format!("docker pull -q {}", registry::IMAGE),
        ],
    );
    let (code, log) = r.end_life(&log_path, LIFE);
    let job = r.job(job.id);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        job.result,
        Some(JobResult::Succeeded),
        "job output:\n{}\nlog:\n{log}",
        job.output
    );
    assert!(log.contains("phase=\"sandbox\""), "not sandboxed:\n{log}");
    assert!(
        log.contains(&format!(
            "registry: pulls Docker Hub images through the cache {url}"
        )),
        "{log}"
    );
    assert!(job.output.contains("no-images-at-start"), "{}", job.output);
    assert!(
        job.output.contains(&format!("mirrors=[\"{url}/\"]")),
        "{}",
        job.output
    );
    let served = cache.served();
    assert!(
        served.blob_gets >= up.image().layers.len(),
        "the cache served {served:?}:\n{}",
        cache.log()
    );
    r.assert_ended_clean(&log);
}
