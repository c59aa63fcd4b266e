//! The promise, proven per box: the same runner, configured right, under the sysbox-like box and
//! under the privileged-like box. Each case is the whole `sysrunner run` binary in the box, the
//! fake GitHub outside it (its own network namespace, a veth at MTU 1400 as the box's only link)
//! and the fake runner inside. Plus the unsupported leg. The host leg is in tests/cli.rs.

mod lifecycle_support;

use lifecycle_support::*;
use nix::sys::signal::Signal;
use std::time::Duration;
use sysrunner_testkit::fake_github::{FakeConfig, JobResult, JobStatus};
use sysrunner_testkit::{self as testkit, BoxKind};

const LIFE: Duration = Duration::from_secs(120);

fn ready() -> Option<sysrunner_testkit::lock::Lock> {
    testkit::require("matrix", &NEEDS).then(testkit::serial)
}

const WORK: &[&str] = &[
    "docker import ../busybox.tar matrix/busybox >/dev/null",
    "docker run --rm matrix/busybox busybox echo ran-a-container",
    "mkdir ctx && printf 'FROM matrix/busybox\\nRUN [\"busybox\", \"sh\", \"-c\", \"echo built > /built\"]\\n' > ctx/Dockerfile && docker build -q -t matrix/built ctx >/dev/null",
    "echo \"build: $(docker run --rm matrix/built busybox cat /built)\"",
    "docker network create n1 >/dev/null && echo \"mtu: $(docker run --rm --network n1 matrix/busybox busybox cat /sys/class/net/eth0/mtu)\"",
];

fn case(kind: BoxKind, runtime: &str, profile: &str) {
    let Some(_serial) = ready() else { return };
    let r = Runner::start(kind, FakeConfig::default());

    // The verdict and the plan, with the MTU read from the box's only link.
    let out =
        r.b.output(
            r.b.command(r.b.sysrunner_in_box())
                .args(["probe", "--json"]),
        )
        .unwrap();
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["runtime"], runtime, "{p:#}");
    assert_eq!(p["dockerd"]["profile"], profile);
    assert_eq!(p["live"]["default_route"]["mtu"], 1400, "{p:#}");
    assert_eq!(p["dockerd"]["mtu"], 1400);

    // A job: docker run, docker build, a network with the link's MTU.
    let env = r.settings("sysrunner-matrix");
    let job = r.queue("sysrunner-matrix", "work", WORK);
    let (code, log) = r.life(&env, LIFE);
    let job = r.job(job.id);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        job.result,
        Some(JobResult::Succeeded),
        "{}\n{log}",
        job.output
    );
    for want in ["ran-a-container", "build: built", "mtu: 1400"] {
        assert!(
            job.output.contains(want),
            "{want:?} missing: {}",
            job.output
        );
    }

    // SIGTERM while idle.
    let log = r.b.paths().state.join("idle.log");
    let mut child = r.spawn(&env, &log);
    r.until(LIFE, "online", |r| {
        r.runners().iter().any(|x| x.status == "online")
    });
    testkit::boxes::signal(child.id(), Signal::SIGTERM).unwrap();
    let st = testkit::boxes::wait_within(&mut child, Duration::from_secs(30)).unwrap();
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(r.runners().is_empty());

    // SIGTERM while busy: the job is cancelled, the runner deregistered.
    let job = r.queue("sysrunner-matrix", "long", &["sleep 120"]);
    let log = r.b.paths().state.join("busy.log");
    let mut child = r.spawn(&env, &log);
    r.until(LIFE, "the job in progress", |r| {
        r.job(job.id).status == JobStatus::InProgress
    });
    testkit::boxes::signal(child.id(), Signal::SIGTERM).unwrap();
    let st = testkit::boxes::wait_within(&mut child, Duration::from_secs(30)).unwrap();
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(r.job(job.id).result, Some(JobResult::Canceled));
    assert!(r.runners().is_empty());

    // dockerd killed mid-job: exit 75, nothing left.
    let job = r.queue("sysrunner-matrix", "long", &["sleep 120"]);
    let log = r.b.paths().state.join("dockerd.log");
    let mut child = r.spawn(&env, &log);
    r.until(LIFE, "the job in progress", |r| {
        r.job(job.id).status == JobStatus::InProgress
    });
    let dockerd = r.box_pid("dockerd").expect("dockerd in the box");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(dockerd), Signal::SIGKILL).unwrap();
    let st = testkit::boxes::wait_within(&mut child, Duration::from_secs(60)).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(st.and_then(|s| s.code()), Some(75), "{text}");
    r.assert_ended_clean(&text);

    // The next life of the same box starts clean.
    let job = r.queue(
        "sysrunner-matrix",
        "clean",
        &[
            "test -z \"$(docker images -q matrix/built)\"",
            "test ! -e ctx",
        ],
    );
    let (code, log) = r.life(&env, LIFE);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(r.job(job.id).result, Some(JobResult::Succeeded), "{log}");
}

#[test]
fn the_sysbox_like_box_runs_the_whole_matrix() {
    // No sysboxfs in the box: the verdict is `userns`, run like sysbox.
    case(BoxKind::SysboxLike, "userns", "namespaced");
}

#[test]
fn the_privileged_like_box_runs_the_whole_matrix() {
    case(BoxKind::PrivilegedLike, "privileged", "privileged");
}

/// `sysrunner run` in the box as in a container with Docker's default capabilities (no
/// CAP_SYS_ADMIN, no CAP_NET_ADMIN) and a read-only cgroupfs, with exactly `env`.
fn run_unsupported(
    r: &Runner,
    env: &std::collections::BTreeMap<String, String>,
) -> std::process::Output {
    let script = format!(
        "for d in /sys/fs/cgroup/*; do mount -o remount,bind,ro \"$d\" 2>/dev/null; done; \
         exec setpriv --bounding-set -sys_admin,-net_admin --inh-caps -sys_admin,-net_admin -- {exe} run",
        exe = r.b.sysrunner_in_box().display()
    );
    let mut cmd = r.b.command("sh");
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env)
        .args(["-c", &script]);
    r.b.output(&mut cmd).unwrap()
}

/// Default docker capabilities (no CAP_SYS_ADMIN, no CAP_NET_ADMIN) and a read-only cgroupfs:
/// exit 78 with the remedy, and not one API call.
#[test]
fn an_unsupported_container_exits_78_without_an_api_call() {
    let Some(_serial) = ready() else { return };
    let r = Runner::start(BoxKind::PrivilegedLike, FakeConfig::default());
    let out = run_unsupported(&r, &r.settings("sysrunner-unsupported"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("CAP_SYS_ADMIN") && err.contains("CAP_NET_ADMIN"),
        "{err}"
    );
    assert!(err.contains("read-only"), "{err}");
    assert!(
        err.contains("remedy") && err.contains("sysbox-runc"),
        "{err}"
    );
    assert!(
        r.requests().is_empty(),
        "an API call was made: {:?}",
        r.requests()
    );
}

/// The same container with DOCKERD=off: the verdict is a warning, the life runs its job without a
/// dockerd (none started, no DOCKER_HOST for the job) and exits 0.
#[test]
fn an_unsupported_container_runs_a_life_without_dockerd_when_dockerd_is_off() {
    let Some(_serial) = ready() else { return };
    let r = Runner::start(BoxKind::PrivilegedLike, FakeConfig::default());
    let name = "sysrunner-nodockerd";
    let mut env = r.settings(name);
    env.insert("DOCKERD".into(), "off".into());
    env.insert("LOG_FORMAT".into(), "json".into());
    let job = r.queue(
        name,
        "no-docker",
        &[
            "test -z \"$DOCKER_HOST\"",
            "! test -S /var/run/docker.sock",
            "echo ran-without-docker",
        ],
    );
    let out = run_unsupported(&r, &env);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains("DOCKERD=off: the life runs without one"),
        "the verdict is a warning: {log}"
    );
    assert!(!log.contains("\"phase\":\"dockerd-ready\""), "{log}");
    assert!(
        !log.contains("\"target\":\"dockerd\""),
        "no dockerd ran: {log}"
    );
    let done = r.job(job.id);
    assert_eq!(
        done.result,
        Some(sysrunner_testkit::fake_github::JobResult::Succeeded),
        "{done:?}\n{log}"
    );
    assert!(done.output.contains("ran-without-docker"), "{done:?}");
}
