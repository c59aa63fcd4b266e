//! `sysrunner run`, the whole binary, in both boxes, against the fake GitHub (in the box's own
//! network namespace) and the fake actions/runner: a job runs with docker, registration modes,
//! signals, crashes, and the next life of the same box starting clean. Needs root and dockerd;
//! skips (or fails in CI) through `testkit::require`.

mod lifecycle_support;

use lifecycle_support::*;
use std::time::{Duration, Instant};
use sysrunner_testkit::fake_github::{FakeConfig, JobResult, JobStatus};
use sysrunner_testkit::{self as testkit, BoxKind};

const LIFE: Duration = Duration::from_secs(120);

fn ready() -> Option<sysrunner_testkit::lock::Lock> {
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
    r.assert_ended_clean(&log);

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

fn online(r: &sysrunner_testkit::rig::Rig, name: &str) -> bool {
    r.runners()
        .iter()
        .any(|x| x.name == name && x.status == "online")
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let status = testkit::boxes::wait_within(child, limit).unwrap();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status.and_then(|s| s.code())
}

fn log_of(r: &Runner, name: &str) -> std::path::PathBuf {
    r.b.paths().state.join(format!("{name}.log"))
}

#[test]
fn sigterm_while_listening_deregisters_and_exits_0_within_stop_timeout() {
    let Some(_serial) = ready() else { return };
    let r = Runner::start(BoxKind::SysboxLike, FakeConfig::default());
    let env = r.settings("sysrunner-idle");
    let log = log_of(&r, "idle");
    let mut child = r.spawn(&env, &log);
    r.until(LIFE, "the runner online", |r| online(r, "sysrunner-idle"));
    // No process holds the token in its environment or argv any more, sysrunner's own included
    // (it re-executed itself and took the secret over a pipe).
    for p in r.b.pids().unwrap() {
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("box-exec") {
            // The harness's `docker exec`: outside what a container's processes are.
            continue;
        }
        for f in ["environ", "cmdline"] {
            let text = std::fs::read(format!("/proc/{p}/{f}")).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&text).contains(TOKEN),
                "/proc/{p}/{f} holds the token"
            );
        }
    }
    let health =
        r.b.output(r.b.command(r.b.sysrunner_in_box()).arg("healthcheck"))
            .unwrap();
    assert_eq!(
        health.status.code(),
        Some(0),
        "healthcheck while listening: {}",
        String::from_utf8_lossy(&health.stdout)
    );
    let t = Instant::now();
    testkit::boxes::signal(child.id(), nix::sys::signal::Signal::SIGTERM).unwrap();
    let code = wait_exit(&mut child, Duration::from_secs(30));
    let took = t.elapsed();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(0), "{text}");
    assert!(
        took < Duration::from_secs(9 + 2),
        "stopped in {took:?}, over STOP_TIMEOUT 9s"
    );
    assert!(text.contains("while idle: deregistered"), "{text}");
    r.assert_ended_clean(&text);
    eprintln!("SIGTERM while idle: stopped in {took:?}");
}

fn sigterm_while_busy(drain: &str, job_steps: &[&str], want: JobResult) -> Duration {
    let r = Runner::start(BoxKind::PrivilegedLike, FakeConfig::default());
    let mut env = r.settings("sysrunner-busy");
    env.insert("DRAIN_TIMEOUT".into(), drain.into());
    let job = r.queue("sysrunner-busy", "long", job_steps);
    let log = log_of(&r, "busy");
    let mut child = r.spawn(&env, &log);
    r.until(LIFE, "the job in progress", |r| {
        r.job(job.id).status == JobStatus::InProgress
    });
    let t = Instant::now();
    testkit::boxes::signal(child.id(), nix::sys::signal::Signal::SIGTERM).unwrap();
    let code = wait_exit(&mut child, Duration::from_secs(60));
    let took = t.elapsed();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(r.job(job.id).result, Some(want), "{text}");
    r.assert_ended_clean(&text);
    took
}

#[test]
fn sigterm_while_busy_without_drain_cancels_the_job_and_deregisters() {
    let Some(_serial) = ready() else { return };
    let took = sigterm_while_busy("0", &["sleep 120"], JobResult::Canceled);
    assert!(took < Duration::from_secs(9 + 2), "stopped in {took:?}");
    eprintln!("SIGTERM while busy, no drain: stopped in {took:?}");
}

#[test]
fn sigterm_while_busy_with_a_drain_lets_the_job_finish() {
    let Some(_serial) = ready() else { return };
    let took = sigterm_while_busy("60s", &["sleep 3", "echo finished"], JobResult::Succeeded);
    assert!(took < Duration::from_secs(60), "stopped in {took:?}");
}

#[test]
fn a_crashing_runner_exits_75_and_deregisters() {
    let Some(_serial) = ready() else { return };
    let r = Runner::start(BoxKind::SysboxLike, FakeConfig::default());
    let mut env = r.settings("sysrunner-crash");
    env.insert("FAKE_RUNNER_EXIT".into(), "1".into());
    let (code, log) = r.life(&env, LIFE);
    assert_eq!(code, Some(75), "{log}");
    r.assert_ended_clean(&log);
}

/// actions-runner-controller starts the container with
/// ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1 and reads its exit 7 as "the scale set's
/// runner is outdated"; sysrunner used to turn the listener's 7 into 75. Without the variable the
/// listener says 1, and the life ends 75 as any crash does.
#[test]
fn a_deprecated_runner_exits_7_when_the_controller_asks_for_it_and_75_otherwise() {
    let Some(_serial) = ready() else { return };
    let cfg = FakeConfig {
        // Above the fake runner's own version: its session is refused as too old.
        min_runner_version: "2.999.0".into(),
        ..FakeConfig::default()
    };
    let r = Runner::start(BoxKind::SysboxLike, cfg);
    let mut env = r.settings("sysrunner-outdated");
    env.insert(
        "ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE".into(),
        "1".into(),
    );
    let (code, log) = r.life(&env, LIFE);
    assert_eq!(code, Some(7), "{log}");
    assert!(log.contains("is deprecated"), "{log}");
    r.assert_ended_clean(&log);

    env.remove("ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE");
    let (code, log) = r.life(&env, LIFE);
    assert_eq!(code, Some(75), "{log}");
    r.assert_ended_clean(&log);
}

/// GitHub refuses runners 30 days behind its newest release, and a JIT runner updates itself before
/// every job once it is behind: a life says so, naming both versions, in its log, its health state
/// and `probe --json`. The fake offers 2.999.0; the fake runner is 2.336.0.
#[test]
fn an_outdated_image_runner_is_reported_with_both_versions() {
    let Some(_serial) = ready() else { return };
    let cfg = FakeConfig {
        runner_version: "2.999.0".into(),
        ..FakeConfig::default()
    };
    let r = Runner::start(BoxKind::SysboxLike, cfg);
    let env = r.settings("sysrunner-behind");
    r.queue("sysrunner-behind", "quick", &["true"]);
    let (code, log) = r.life(&env, LIFE);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("WARN")
                && l.contains("actions/runner 2.336.0 is older than 2.999.0")),
        "{log}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&r.b.run_shell("cat /run/sysrunner/state.json").unwrap()).unwrap();
    assert_eq!(
        state["runner_version"],
        serde_json::json!({"image": "2.336.0", "offered": "2.999.0", "outdated": true}),
        "{state}"
    );
    let probe =
        r.b.run_shell(&format!(
            "{} probe --json",
            r.b.sysrunner_in_box().display()
        ))
        .unwrap();
    let probe: serde_json::Value = serde_json::from_str(&probe).unwrap();
    assert_eq!(probe["runner_version"]["outdated"], true, "{probe}");
    r.assert_ended_clean(&log);
}

/// The image store is explicit in daemon.json either way (Docker >= 29 would otherwise put every
/// fresh data root on the containerd store): both run a job's `docker import` and `docker run`.
#[test]
fn both_image_stores_run_a_job_with_docker() {
    let Some(_serial) = ready() else { return };
    let r = Runner::start(BoxKind::SysboxLike, FakeConfig::default());
    for (store, driver) in [("graphdriver", "overlay2"), ("containerd", "overlayfs")] {
        let mut env = r.settings("sysrunner-store");
        env.insert("DOCKER_IMAGE_STORE".into(), store.into());
        let job = r.queue(
            "sysrunner-store",
            store,
            &[
                "docker info --format 'driver={{.Driver}} status={{json .DriverStatus}}'",
                "docker import ../busybox.tar store-test >/dev/null && docker run --rm store-test busybox echo ran-on-$(docker info --format '{{.Driver}}')",
            ],
        );
        let (code, log) = r.life(&env, LIFE);
        let job = r.job(job.id);
        assert_eq!(code, Some(0), "{log}");
        assert_eq!(
            job.result,
            Some(JobResult::Succeeded),
            "{}\n{log}",
            job.output
        );
        assert!(
            job.output.contains(&format!("driver={driver}")),
            "{store}: {}",
            job.output
        );
        assert_eq!(
            job.output.contains("io.containerd.snapshotter.v1"),
            store == "containerd",
            "{store}: {}",
            job.output
        );
        assert!(
            job.output.contains(&format!("ran-on-{driver}")),
            "{}",
            job.output
        );
        r.assert_ended_clean(&log);
    }
}

/// Regression: orphans re-parented to sysrunner exit while the listener exits 2; the listener's
/// status must reach its owner (a restart), not be lost to an orphan's.
#[test]
fn orphans_exiting_while_the_listener_exits_2_cannot_steal_its_status() {
    let Some(_serial) = ready() else { return };
    let r = Runner::start(BoxKind::SysboxLike, FakeConfig::default());
    let mut env = r.settings("sysrunner-orphans");
    env.insert("FAKE_RUNNER_EXIT".into(), "2".into());
    env.insert("FAKE_RUNNER_ORPHANS".into(), "5".into());
    let job = r.queue("sysrunner-orphans", "after-restart", &["echo ran"]);
    let (code, log) = r.life(&env, LIFE);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("retryable error (exit 2); restart 1 of 5"),
        "{log}"
    );
    assert_eq!(r.job(job.id).result, Some(JobResult::Succeeded), "{log}");
    assert!(r.runners().is_empty());
}

#[test]
fn dockerd_dying_mid_job_stops_the_runner_with_75() {
    let Some(_serial) = ready() else { return };
    let r = Runner::start(BoxKind::PrivilegedLike, FakeConfig::default());
    let env = r.settings("sysrunner-dockerd-dies");
    let job = r.queue("sysrunner-dockerd-dies", "long", &["sleep 120"]);
    let log = log_of(&r, "dockerd-dies");
    let mut child = r.spawn(&env, &log);
    r.until(LIFE, "the job in progress", |r| {
        r.job(job.id).status == JobStatus::InProgress
    });
    let dockerd = r.box_pid("dockerd").expect("dockerd runs in the box");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dockerd),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let code = wait_exit(&mut child, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(75), "{text}");
    assert!(text.contains("dockerd died"), "{text}");
    // The runner had the time to cancel its job and say so.
    assert_eq!(r.job(job.id).result, Some(JobResult::Canceled), "{text}");
    r.assert_ended_clean(&text);
}

#[test]
fn after_sigkill_the_next_life_deletes_the_leftover_registration() {
    let Some(_serial) = ready() else { return };
    let r = Runner::start(BoxKind::SysboxLike, FakeConfig::default());
    let env = r.settings("sysrunner-killed");
    let log = log_of(&r, "killed");
    let mut child = r.spawn(&env, &log);
    r.until(LIFE, "the runner online", |r| online(r, "sysrunner-killed"));
    let old = r.runners()[0].id;
    // A container's death: everything in it is killed, again and again until nothing is left,
    // since a process can fork between a listing and its kill.
    let kill_all = |r: &testkit::rig::Rig| {
        let pids = r.b.pids().unwrap();
        for p in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        pids.is_empty()
    };
    kill_all(&r.0);
    let _ = wait_exit(&mut child, Duration::from_secs(30));
    r.until(Duration::from_secs(30), "the box empty", kill_all);
    assert!(
        r.runners().iter().any(|x| x.id == old),
        "the killed life left its registration"
    );
    let job = r.queue("sysrunner-killed", "second-life", &["echo second"]);
    let (code, text) = r.life(&env, LIFE);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("that an earlier life left registered"),
        "{text}"
    );
    assert_eq!(r.job(job.id).result, Some(JobResult::Succeeded));
    assert!(r.runners().is_empty(), "{text}");
    assert!(
        r.requests().iter().any(|q| q.method == "DELETE"
            && q.path.ends_with(&format!("/actions/runners/{old}"))
            && q.status == Some(204)),
        "the leftover was deleted by id"
    );
}

#[test]
fn config_mode_registers_through_config_sh() {
    let Some(_serial) = ready() else { return };
    let r = Runner::start(BoxKind::SysboxLike, FakeConfig::default());
    let mut env = r.settings("sysrunner-config");
    env.insert("REGISTRATION".into(), "config".into());
    env.insert("RUNNER_LABELS".into(), "gpu".into());
    let job = r.queue("sysrunner-config", "configured", &["echo via-config"]);
    let (code, log) = r.life(&env, LIFE);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("√ Settings Saved."), "{log}");
    assert_eq!(r.job(job.id).result, Some(JobResult::Succeeded), "{log}");
    assert!(
        r.requests()
            .iter()
            .any(|q| q.path.ends_with("/actions/runners/registration-token"))
    );
    assert!(r.runners().is_empty(), "{log}");
    // The registration token travelled in the environment, never in argv.
    assert!(!log.contains("--token"), "{log}");
}

#[test]
fn a_pre_made_jit_config_makes_no_api_call() {
    let Some(_serial) = ready() else { return };
    let r = Runner::start(BoxKind::SysboxLike, FakeConfig::default());
    // The controller's part: it registers the runner and hands over the JIT config.
    let url = r.url.clone();
    let jit: serde_json::Value = r.in_github_netns(async move {
        reqwest::Client::new()
            .post(format!("{url}/repos/octo-org/octo-repo/actions/runners/generate-jitconfig"))
            .header("user-agent", "a-controller")
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .json(&serde_json::json!({"name": "arc-runner-1", "runner_group_id": 1, "labels": ["self-hosted"], "work_folder": "_work"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let env: std::collections::BTreeMap<String, String> = [
        (
            "ACTIONS_RUNNER_INPUT_JITCONFIG",
            jit["encoded_jit_config"].as_str().unwrap(),
        ),
        ("RUNNER_SUDO", "false"),
        ("LOG_LEVEL", "info,dockerd=warn"),
        ("NO_COLOR", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let job = r.queue(
        "arc-runner-1",
        "from-a-controller",
        &["echo controller-made"],
    );
    let (code, log) = r.life(&env, LIFE);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(r.job(job.id).result, Some(JobResult::Succeeded), "{log}");
    let ours: Vec<String> = r
        .requests()
        .iter()
        .filter(|q| {
            q.request_headers
                .get("user-agent")
                .is_some_and(|u| u.starts_with("sysrunner/"))
        })
        .map(|q| format!("{} {}", q.method, q.path))
        .collect();
    assert!(ours.is_empty(), "sysrunner called the API: {ours:?}");
}

#[test]
fn sigterm_while_starting_leaves_no_registration() {
    let Some(_serial) = ready() else { return };
    let r = Runner::start(BoxKind::SysboxLike, FakeConfig::default());
    let env = r.settings("sysrunner-starting");
    let log = log_of(&r, "starting");
    let mut child = r.spawn(&env, &log);
    r.until(LIFE, "start-up under way", |r| {
        r.box_pid("dockerd").is_some()
    });
    testkit::boxes::signal(child.id(), nix::sys::signal::Signal::SIGTERM).unwrap();
    let code = wait_exit(&mut child, Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(0), "{text}");
    r.assert_ended_clean(&text);
}

#[test]
fn sigterm_while_dockerd_never_gets_ready_still_deletes_the_registration() {
    let Some(_serial) = ready() else { return };
    let r = Runner::start(BoxKind::SysboxLike, FakeConfig::default());
    // A dockerd that says its version and then never answers on its socket, so start-up cannot
    // settle within STOP_TIMEOUT. It lies beside the box's copy of sysrunner, which the box sees
    // at the same path (the box's /tmp is emptied at the start of a life).
    let bin = r.b.paths().state.join("slow-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        bin.join("dockerd"),
        "#!/bin/sh\n[ \"$1\" = --version ] && exec echo 'Docker version 26.1.5, build slow'\nexec sleep 600\n",
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("dockerd"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut env = r.settings("sysrunner-slow-dockerd");
    env.insert("STOP_TIMEOUT".into(), "3s".into());
    env.insert(
        "PATH".into(),
        format!("{}:{}", bin.display(), testkit::rig::BOX_PATH),
    );
    let log = log_of(&r, "slow-dockerd");
    let mut child = r.spawn(&env, &log);
    r.until(LIFE, "the runner registered", |r| !r.runners().is_empty());
    testkit::boxes::signal(child.id(), nix::sys::signal::Signal::SIGTERM).unwrap();
    let code = wait_exit(&mut child, Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("start-up did not settle"), "{text}");
    r.assert_ended_clean(&text);
}

#[test]
fn a_self_updating_runner_is_waited_for_and_started_again() {
    let Some(_serial) = ready() else { return };
    let r = Runner::start(BoxKind::SysboxLike, FakeConfig::default());
    let mut env = r.settings("sysrunner-update");
    env.insert("FAKE_RUNNER_EXIT".into(), "3".into());
    let job = r.queue("sysrunner-update", "after-update", &["echo updated"]);
    let (code, log) = r.life(&env, LIFE);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("the runner updated itself"), "{log}");
    assert_eq!(r.job(job.id).result, Some(JobResult::Succeeded), "{log}");
}

/// sudo works only where the box's root is the host's root (a sysbox container's image has its
/// own, uid-shifted sudo), so this runs in the privileged-like box.
#[test]
fn runner_sudo_decides_whether_a_job_can_become_root() {
    let Some(_serial) = ready() else { return };
    if !std::path::Path::new("/usr/bin/sudo").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "sudo is not installed (.ci/install-deps installs it)"
        );
        eprintln!("skipped: sudo is not installed");
        return;
    }
    let r = Runner::start(BoxKind::PrivilegedLike, FakeConfig::default());
    for (sudo, step) in [
        ("false", "! sudo -n true"),
        ("true", "test \"$(sudo -n id -u)\" = 0"),
    ] {
        let mut env = r.settings("sysrunner-sudo");
        env.insert("RUNNER_SUDO".into(), sudo.into());
        let job = r.queue("sysrunner-sudo", "sudo", &[step]);
        let (code, log) = r.life(&env, LIFE);
        assert_eq!(code, Some(0), "{log}");
        let job = r.job(job.id);
        assert_eq!(
            job.result,
            Some(JobResult::Succeeded),
            "RUNNER_SUDO={sudo}: {}\n{log}",
            job.output
        );
    }
}

/// A compose secret is a world-readable file: once sysrunner has read it, a job finds it empty.
#[test]
fn a_secret_file_is_masked_from_the_job() {
    let Some(_serial) = ready() else { return };
    let r = Runner::start(BoxKind::SysboxLike, FakeConfig::default());
    r.b.run_shell("mkdir -p /run/secrets").unwrap();
    r.b.write_file("/run/secrets/access_token", format!("{TOKEN}\n"))
        .unwrap();
    r.b.run_shell("chmod 0444 /run/secrets/access_token")
        .unwrap();
    let mut env = r.settings("sysrunner-secret-file");
    env.remove("ACCESS_TOKEN");
    env.insert(
        "ACCESS_TOKEN_FILE".into(),
        "/run/secrets/access_token".into(),
    );
    let job = r.queue(
        "sysrunner-secret-file",
        "read-the-secret",
        &[
            "test ! -s /run/secrets/access_token",
            "! grep -qs 'ghp_fak[e]' /run/secrets/access_token",
        ],
    );
    let (code, log) = r.life(&env, LIFE);
    assert_eq!(code, Some(0), "{log}");
    let job = r.job(job.id);
    assert_eq!(
        job.result,
        Some(JobResult::Succeeded),
        "the job read the secret file:\n{}\n{log}",
        job.output
    );
    assert!(!log.contains("could not mask"), "{log}");
}
