//! `sysrunner-testkit demo`, the README's first command: one whole life of this sysrunner against
//! the bundled fakes, in each box; and its refusal to run with real GitHub credentials set.

use std::process::Command;
use sysrunner_testkit as testkit;

const EXE: &str = env!("CARGO_BIN_EXE_sysrunner");

/// The kit's binary (built beside this test's package by the workspace, see
/// `sysrunner_testkit::binaries`), told to run this package's sysrunner.
fn kit() -> Command {
    let mut c = Command::new(testkit::binaries::testkit());
    c.env_clear();
    c
}

fn demo(kind: &str) {
    if !testkit::require("demo", &testkit::gate::BOX_WITH_DOCKERD) {
        return;
    }
    let _serial = testkit::serial();
    let out = kit()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .args(["demo", "--box", kind, "--sysrunner", EXE])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for phase in [
        "probe verdict",
        "dockerd ready",
        "registered",
        "listening for jobs",
        "job started",
        "job done",
        "deregistered",
        "exit: 0",
    ] {
        assert!(stdout.contains(phase), "{phase:?} missing:\n{stdout}");
    }
    assert!(
        stdout.contains("hello from a container on the runner's own dockerd"),
        "{stdout}"
    );
    assert!(
        stdout.contains("container MTU: 1400"),
        "the inner network takes the link's MTU:\n{stdout}"
    );
    assert!(
        stdout.contains("job                Completed: Succeeded"),
        "the summary names the job's result as GitHub does:\n{stdout}"
    );
    assert!(!stdout.contains("Some("), "{stdout}");
    assert!(stdout.contains("runners at GitHub  0"), "{stdout}");
    assert!(stdout.contains("processes in box   0"), "{stdout}");
    // Nothing of it stays on the machine: no network namespace, no veth, no box cgroup.
    let netns = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("sysrunner-gh-"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(netns, 0, "a network namespace was left");
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("sgh"),
        "a veth was left"
    );
    let cgroups = Command::new("find")
        .args([
            "/sys/fs/cgroup",
            "-maxdepth",
            "8",
            "-name",
            "sysrunner-box-*",
        ])
        .output()
        .unwrap();
    assert!(
        cgroups.stdout.is_empty(),
        "box cgroups were left: {}",
        String::from_utf8_lossy(&cgroups.stdout)
    );
}

#[test]
fn the_demo_runs_a_whole_life_in_the_sysbox_like_box() {
    demo("sysbox");
}

#[test]
fn the_demo_runs_a_whole_life_in_the_privileged_like_box() {
    demo("privileged");
}

#[test]
fn the_demo_refuses_when_real_github_credentials_are_set() {
    let out = kit()
        .env("REPO", "octo-org/octo-repo")
        .env("ACCESS_TOKEN", "ghp_real")
        .arg("demo")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("never talks to GitHub") && err.contains("sysrunner run"),
        "{err}"
    );
    assert!(!err.contains("ghp_real"));
}
