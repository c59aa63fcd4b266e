//! The scale rig against the real kernel, dockerd and `sysrunner`: a runner container started the
//! way `sysrunner scale` will start one (the runner image, a JIT config from the REST API, plain
//! runc with Docker's default capabilities, the default bridge) runs its one job at the fake
//! GitHub, deregisters and exits 0. Needs root; skips (or fails in CI) through `testkit::require`.
//!
//! `sysrunner` is the root package's binary, which `cargo test -p sysrunner-testkit` does not
//! build: `$SYSRUNNER_BIN`, else the one `cargo build` left in this test's target directory.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use sysrunner_testkit::fake_github::{FakeConfig, JobResult, JobStatus};
use sysrunner_testkit::rig::TOKEN;
use sysrunner_testkit::scale_rig::{IMAGE, ScaleRig};
use sysrunner_testkit::{self as testkit, binaries, gate};

/// One life in a container: start, one job, deregistration.
const LIFE: Duration = Duration::from_secs(120);

/// The `sysrunner` under test: `$SYSRUNNER_BIN`, else beside this test's executable or one
/// directory up (`target/<profile>/`, where `cargo build` puts it).
fn sysrunner() -> PathBuf {
    if let Some(p) = std::env::var_os(binaries::SYSRUNNER_ENV).filter(|v| !v.is_empty()) {
        return p.into();
    }
    let me = std::env::current_exe().expect("the test's executable");
    binaries::beside(&me, "sysrunner")
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no sysrunner beside {}: build it with `cargo build -p sysrunner`, or name one with ${}",
                me.display(),
                binaries::SYSRUNNER_ENV
            )
        })
}

/// A controller's call: a JIT config for runner `name` in the repository, from the REST API.
fn jit_config(s: &ScaleRig, name: &str) -> String {
    let url = s.rig.url.clone();
    let body = json!({"name": name, "runner_group_id": 1, "labels": ["self-hosted"]});
    let (status, answer): (u16, Value) = s.rig.in_github_netns(async move {
        let resp = reqwest::Client::new()
            .post(format!(
                "{url}/repos/octo-org/octo-repo/actions/runners/generate-jitconfig"
            ))
            .header("user-agent", "a-scale-controller")
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .json(&body)
            .send()
            .await
            .expect("POST generate-jitconfig");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("a JSON answer"))
    });
    assert_eq!(status, 201, "generate-jitconfig: {answer}");
    answer["encoded_jit_config"]
        .as_str()
        .unwrap_or_else(|| panic!("no encoded_jit_config in {answer}"))
        .to_owned()
}

#[test]
fn a_runner_container_on_the_default_bridge_runs_its_job_and_exits_0() {
    if !testkit::require(
        "a runner container in the scale rig",
        &gate::BOX_WITH_DOCKERD,
    ) {
        return;
    }
    let _serial = testkit::serial();
    let s = ScaleRig::start(FakeConfig::default(), &sysrunner()).unwrap_or_else(|e| panic!("{e}"));
    let size = s.docker(&format!("image inspect --format '{{{{.Size}}}}' {IMAGE}"));
    eprintln!("scale rig started: {:?}; {IMAGE}: {size} bytes", s.times);

    let name = "scale-runner-1";
    let jit = jit_config(&s, name);
    let job = s.rig.queue(name, "job", &["echo hi"]);
    let t0 = Instant::now();
    // The JIT config goes in the CLI's environment, never in its argv.
    let id = s
        .try_docker(
            &format!(
                "run -d --label sysrunner.test=scale-rig \
                 -e ACTIONS_RUNNER_INPUT_JITCONFIG \
                 -e ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1 \
                 -e DOCKERD=off -e LIFE_SANDBOX=off {IMAGE}"
            ),
            &[("ACTIONS_RUNNER_INPUT_JITCONFIG", &jit)],
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.containers("sysrunner.test=scale-rig"), [id.as_str()]);
    let code = s.wait(&id, LIFE);
    let t_life = t0.elapsed();
    let logs = s.logs(&id);
    let times = s.docker(&format!(
        "inspect --format '{{{{.State.StartedAt}}}} {{{{.State.FinishedAt}}}}' {id}"
    ));
    eprintln!("container: docker run -d to exit {t_life:?} (started, finished: {times})");
    assert_eq!(code, Ok(0), "the container's exit\n--- its log\n{logs}");

    let job = s.rig.job(job.id);
    assert_eq!(job.status, JobStatus::Completed, "{job:?}\n--- log\n{logs}");
    assert_eq!(
        job.result,
        Some(JobResult::Succeeded),
        "{job:?}\n--- log\n{logs}"
    );
    assert!(job.output.contains("hi"), "{job:?}\n--- log\n{logs}");
    let runners = s.rig.runners();
    assert!(
        runners.iter().all(|r| r.name != name),
        "still registered: {runners:?}\n--- log\n{logs}"
    );
    assert!(
        !logs.contains(&jit),
        "the JIT config is in the log:\n{logs}"
    );
}
