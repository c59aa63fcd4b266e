//! `sysrunner run`, the whole binary, in both boxes, against the fake GitHub (in the box's own
//! network namespace) and the fake actions/runner: a job runs with docker, registration modes,
//! signals, crashes, and the next life of the same box starting clean. Needs root and dockerd;
//! skips (or fails in CI) through `testkit::require`.
#![cfg(feature = "testkit")]

mod lifecycle_support;

use lifecycle_support::*;
use std::time::{Duration, Instant};
use sysrunner::testkit::fake_github::{FakeConfig, JobResult, JobStatus};
use sysrunner::testkit::{self, BoxKind};

const LIFE: Duration = Duration::from_secs(120);

fn ready() -> Option<sysrunner::testkit::lock::Lock> {
    testkit::require("lifecycle", &NEEDS).then(testkit::serial)
}

/// The job of the first life: docker works, no secret is visible, and it litters everywhere a job
/// can write, for the second life to find clean.
const LITTER: &[&str] = &[
    "echo user=$(id -un)",
    "docker import ../busybox.tar sysrunner-test/busybox >/dev/null && docker run --rm sysrunner-test/busybox busybox echo hello-from-the-inner-docker",
    "docker tag sysrunner-test/busybox left-by-life-one",
    "! env | grep -q 'ghp_fak[e]'",
    "! cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -q 'ghp_fak[e]'",
    "! cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -q 'ghp_fak[e]'",
    "! grep -rqs 'ghp_fak[e]' .. /tmp \"$HOME\"",
    "echo litter > ../bin/litter && cp ../run.sh ../run.sh.new && echo litter >> ../run.sh.new && mv -f ../run.sh.new ../run.sh && echo litter > litter-in-work && echo litter > \"$HOME/litter\" && echo litter > /tmp/litter",
];

const CLEAN: &[&str] = &[
    "test ! -e ../bin/litter",
    "! grep -q litter ../run.sh",
    "test ! -e litter-in-work",
    "test ! -e \"$HOME/litter\"",
    "test ! -e /tmp/litter",
    "test -z \"$(docker images -q left-by-life-one)\"",
];

fn two_lives(kind: BoxKind) {
    let Some(_serial) = ready() else { return };
    let r = Runner::start(kind, FakeConfig::default());
    let env = r.settings("sysrunner-life");
    let job = r.queue("sysrunner-life", "litter", LITTER);
    let t = Instant::now();
    let (code, log) = r.life(&env, LIFE);
    let first = t.elapsed();
    let job = r.job(job.id);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(job.status, JobStatus::Completed, "{log}");
    assert_eq!(
        job.result,
        Some(JobResult::Succeeded),
        "job output:\n{}\nlog:\n{log}",
        job.output
    );
    assert!(job.output.contains("user=runner"), "{}", job.output);
    assert!(
        job.output.contains("hello-from-the-inner-docker"),
        "{}",
        job.output
    );
    for marker in [
        "dockerd ready in",
        "registered sysrunner-life (jit)",
        "runner listening",
        "runner busy with litter",
        "job litter completed: Succeeded",
        "dockerd stopped",
        "exit 0",
    ] {
        assert!(log.contains(marker), "{marker:?} missing:\n{log}");
    }
    assert!(!log.contains("ghp_fake"), "the token reached the log");
    assert!(r.runners().is_empty(), "the runner is deregistered");
    assert!(
        r.b.pids().unwrap().is_empty(),
        "processes left: {:?}",
        r.b.pids()
    );

    let job = r.queue("sysrunner-life", "clean", CLEAN);
    let (code, log) = r.life(&env, LIFE);
    let job = r.job(job.id);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        job.result,
        Some(JobResult::Succeeded),
        "the second life found the first's litter:\n{}\n{log}",
        job.output
    );
    assert!(r.runners().is_empty());
    eprintln!("{kind:?}: first life {first:?}");
}

#[test]
fn a_job_runs_with_docker_and_the_next_life_finds_nothing_of_it_sysbox_like() {
    two_lives(BoxKind::SysboxLike);
}

#[test]
fn a_job_runs_with_docker_and_the_next_life_finds_nothing_of_it_privileged_like() {
    two_lives(BoxKind::PrivilegedLike);
}
