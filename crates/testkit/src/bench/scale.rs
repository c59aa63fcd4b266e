//! `sysrunner-testkit bench-scale`: how soon `sysrunner scale` gets a job's runner busy, beside
//! what one runner container can do with no controller at all. Per run, one [`ScaleRig`] (a
//! privileged-like box with a real dockerd and the small runner image, the fake GitHub in its own
//! network namespace; runner containers are plain runc ones with `DOCKERD=off`, the only kind this
//! machine can start), and in it, in turn (so that the machine's noise hits every variant alike):
//!
//! - for each J of `--jobs`, the controller (`sysrunner scale` in the box) twice, each a fresh
//!   start with a scale set of its own, `SCALE_MAX_RUNNERS=J`:
//!   - **warm**: `SCALE_MIN_RUNNERS=J`; once J runner containers run and J runners are online at
//!     the fake (and a second to settle), J jobs are queued at once;
//!   - **from zero**: `SCALE_MIN_RUNNERS=0`; once its message session is open (and a second to
//!     settle), J jobs are queued at once, with no container there;
//!
//!   then SIGTERM, its exit 0 awaited, and no container and no runner left before the next one;
//! - the limits, one runner container each, started with `docker run -d` through the box's docker
//!   CLI with the controller's own container settings and a JIT config from the fake's REST
//!   `generate-jitconfig` (made before the clock starts), for a job queued by runner name:
//!   - **limit for from zero**: the job queued first; timed from `docker run` to the job busy;
//!   - **limit for warm**: the job queued once the runner is online at the fake (and a second
//!     to settle); timed from its queueing to busy.
//!
//! A job is `echo ok`, queued through the fake's control API; its times run from just before its
//! control call (for the from-zero limit, from `docker run`) to its status at the fake becoming
//! `in_progress` (its runner said it started: "runner busy") and `completed`, polled every 10 ms
//! from this process (so each is late by up to 10 ms and one control call). Where the time goes
//! is read off the controller's JSON log: its `jobs acquired` line and each runner's `runner
//! container started` line (after its JIT config, the container's create and start through the
//! Engine API).
//!
//! Results: a table on stdout, `scale.csv` (every sample) in `--out`, and with `--markdown` the
//! section between [`START`] and [`END`] of that file (appended when absent; the rest of the file
//! is left alone, and `bench --markdown` keeps the section as it is).

use super::ms;
use super::report::Stats;
use crate::exit::Exit;
use crate::fake_github::{ControlClient, FakeConfig, JobResult, JobSpec, JobStatus, RunnerState};
use crate::scale_rig::{DOCKER_HOST, IMAGE, SOCKET, ScaleRig};
use crate::{binaries, boxes, docker, gate, rig};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The line that opens the scale section of BENCHMARK.md.
pub const START: &str = "<!-- scale:start -->";
/// The line that closes it.
pub const END: &str = "<!-- scale:end -->";

/// The label the controller puts on its containers (the scale set's name).
const LABEL_SET: &str = "sysrunner.scale-set";
/// The label of the limits' containers.
const LABEL_LIMIT: &str = "sysrunner.bench=scale-limit";
/// How often a job's status is read.
const POLL: Duration = Duration::from_millis(10);
/// At most this long for any one wait: a warm pool, a job, the controller's exit.
const LIMIT: Duration = Duration::from_secs(120);
/// A pause once everything is ready, before the clock starts: what started it has calmed down.
const SETTLE: Duration = Duration::from_secs(1);
const STEP: &str = "echo ok";
/// The controller's container settings (`scale::spec`), for the limits' `docker run`.
const TMPFS: &str = "--tmpfs /tmp:exec,mode=1777,size=2g --tmpfs /run:mode=755,size=256m";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub runs: u32,
    /// Each J: how many jobs are queued at once.
    pub jobs: Vec<usize>,
    /// Where scale.csv goes.
    pub out: PathBuf,
    /// The markdown file whose scale section is replaced, if any.
    pub markdown: Option<PathBuf>,
    pub sysrunner: Option<PathBuf>,
}

/// What was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    /// SCALE_MIN_RUNNERS=J: J runners listening when the jobs come.
    Warm,
    /// SCALE_MIN_RUNNERS=0: no container when the jobs come.
    Zero,
    /// One listening runner container, no controller: queued → busy.
    LimitWarm,
    /// One runner container, no controller: `docker run` → busy.
    LimitZero,
}

impl Variant {
    pub fn word(self) -> &'static str {
        match self {
            Variant::Warm => "warm",
            Variant::Zero => "zero",
            Variant::LimitWarm => "limit-warm",
            Variant::LimitZero => "limit-zero",
        }
    }

    /// Its row's name in the tables.
    fn title(self) -> &'static str {
        match self {
            Variant::Warm => "warm",
            Variant::Zero => "from zero",
            Variant::LimitWarm => "limit for warm",
            Variant::LimitZero => "limit for from zero",
        }
    }
}

/// A job's time from its start (its queueing; for the from-zero limit, `docker run`) to its
/// runner busy (the job `in_progress` at the fake), ms.
pub const BUSY: &str = "busy_ms";
/// … to the job `completed`, ms.
pub const COMPLETED: &str = "completed_ms";
/// A run's time from its first job's queueing to the last of its J jobs busy, ms.
pub const ALL_BUSY: &str = "all_busy_ms";
/// A run's time from its first job's queueing to the controller's first `jobs acquired` log line
/// after it, ms.
pub const ACQUIRED: &str = "acquired_ms";
/// From zero: a job's time from its queueing to the controller's `runner container started` line
/// of the runner that took it (its JIT config, create and start done); for the from-zero limit,
/// from `docker run` to the container's `State.StartedAt` (runc started it), ms.
pub const CONTAINER_STARTED: &str = "container_started_ms";
/// The from-zero limit: `docker run -d` to its return (the CLI through the box's exec and a
/// shell, the container's create and start), ms.
pub const DOCKER_RUN: &str = "docker_run_returned_ms";
/// The from-zero limit: `docker version` through the same path just before it (the CLI's own
/// cost, and one API call), ms.
pub const CLI: &str = "docker_cli_ms";

/// One measurement, in ms.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub run: u32,
    pub variant: Variant,
    /// J: the jobs queued at once.
    pub jobs: usize,
    /// The job (1…J) a per-job metric is of; `None` for a run's own.
    pub job: Option<usize>,
    pub metric: &'static str,
    pub value: f64,
}

/// `sysrunner-testkit bench-scale`.
pub fn run(opts: &Options) -> Exit {
    let missing: Vec<String> = gate::BOX_WITH_DOCKERD
        .iter()
        .filter_map(|n| gate::missing(*n))
        .collect();
    if !missing.is_empty() {
        eprintln!("sysrunner-testkit bench-scale cannot run here:");
        for m in &missing {
            eprintln!("  - {m}");
        }
        return Exit::Unsupported;
    }
    let sysrunner = match binaries::sysrunner(opts.sysrunner.clone()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sysrunner-testkit bench-scale: {e}");
            return Exit::Internal;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&opts.out) {
        eprintln!("sysrunner-testkit bench-scale: {}: {e}", opts.out.display());
        return Exit::Internal;
    }
    // Per run: the rig, two variants per J, two limits.
    let steps = opts.runs as u64 * (1 + 2 * opts.jobs.len() as u64 + 2);
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    let begun = Instant::now();
    for run in 1..=opts.runs {
        let before = bar.position();
        if let Err(e) = one_run(run, opts, &sysrunner, &bar, &mut samples) {
            failures.push(format!("run {run}: {e}"));
        }
        // A run given up skips its remaining steps.
        bar.set_position(before + 1 + 2 * opts.jobs.len() as u64 + 2);
    }
    bar.finish_and_clear();
    let took = begun.elapsed();
    println!("{}", table(&samples, took));
    let csv = opts.out.join("scale.csv");
    let written = write_csv(&samples, &csv).and_then(|()| match &opts.markdown {
        Some(md) => write_markdown(&samples, md, opts),
        None => Ok(()),
    });
    if let Err(e) = written {
        eprintln!("sysrunner-testkit bench-scale: {e}");
        return Exit::Internal;
    }
    match &opts.markdown {
        Some(md) => println!("wrote {} and {}", csv.display(), md.display()),
        None => println!("wrote {}", csv.display()),
    }
    if failures.is_empty() {
        Exit::Ok
    } else {
        for f in &failures {
            eprintln!("sysrunner-testkit bench-scale: {f}");
        }
        Exit::Failed
    }
}

/// One rig: every variant for every J, then the two limits. The first error ends the run (what it
/// left behind goes with the rig); what was measured before it is kept.
fn one_run(
    run: u32,
    opts: &Options,
    sysrunner: &Path,
    bar: &ProgressBar,
    samples: &mut Vec<Sample>,
) -> Result<(), String> {
    bar.set_message(format!("run {run}: the scale rig"));
    let st = Stand::start(sysrunner)?;
    bar.inc(1);
    for &j in &opts.jobs {
        for variant in [Variant::Warm, Variant::Zero] {
            bar.set_message(format!("run {run}: {} × {j}", variant.title()));
            st.clean()?;
            samples.extend(st.controller_variant(run, variant, j)?);
            bar.inc(1);
        }
    }
    for variant in [Variant::LimitZero, Variant::LimitWarm] {
        bar.set_message(format!("run {run}: {}", variant.title()));
        st.clean()?;
        samples.extend(st.limit(run, variant)?);
        bar.inc(1);
    }
    st.clean()
}

/// A job queued: its id and when (just before its control call).
#[derive(Debug, Clone, Copy)]
struct Queued {
    id: u64,
    at: Instant,
    wall: SystemTime,
}

/// What polling saw of a job.
#[derive(Debug, Clone, Default)]
struct Seen {
    busy: Option<Instant>,
    completed: Option<Instant>,
    runner_id: Option<u64>,
    result: Option<JobResult>,
    output: String,
}

/// A controller in the box: its process and its log.
struct Controller {
    child: Option<Child>,
    log: PathBuf,
}

impl Controller {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM (box-exec forwards it), then its exit: 0, or an error with its log's tail.
    fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Err("no controller".into());
        };
        boxes::signal(child.id(), nix::sys::signal::Signal::SIGTERM).map_err(|e| e.to_string())?;
        match boxes::wait_within(&mut child, LIMIT).map_err(|e| e.to_string())? {
            Some(s) if s.code() == Some(0) => Ok(()),
            Some(s) => Err(format!(
                "the controller exited {s} after SIGTERM\n{}",
                tail(&self.log())
            )),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "the controller did not exit within {LIMIT:?} of SIGTERM\n{}",
                    tail(&self.log())
                ))
            }
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The scale rig and what this bench does with it.
struct Stand {
    s: ScaleRig,
    /// The fake GitHub, as the controller and the control client reach it.
    url: String,
}

impl Stand {
    fn start(sysrunner: &Path) -> Result<Stand, String> {
        let s = ScaleRig::start(FakeConfig::default(), sysrunner)?;
        let url = s
            .rig
            .settings("x")
            .get("GITHUB_URL")
            .cloned()
            .ok_or("the rig's settings name no GITHUB_URL")?;
        Ok(Stand { s, url })
    }

    /// A control call in the fake's namespace.
    fn ctl<T, F>(&self, f: impl FnOnce(ControlClient) -> F) -> Result<T, String>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, crate::fake_github::ControlError>>
            + Send
            + 'static,
    {
        let c = ControlClient::new(&self.url);
        self.s.rig.in_github_netns(f(c)).map_err(|e| e.to_string())
    }

    fn runners(&self) -> Result<Vec<RunnerState>, String> {
        self.ctl(|c| async move { c.runners().await })
    }

    /// Polls `f` every 50 ms until it holds (`Ok(true)`), at most [`LIMIT`].
    fn until(&self, what: &str, mut f: impl FnMut() -> Result<bool, String>) -> Result<(), String> {
        let end = Instant::now() + LIMIT;
        while Instant::now() < end {
            if f()? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("{what}: not within {LIMIT:?}"))
    }

    /// No container in the box's dockerd and no runner at the fake (what came before is gone).
    fn clean(&self) -> Result<(), String> {
        self.until("no container and no runner left", || {
            let containers = self.s.try_docker("ps --all --quiet", &[], LIMIT)?;
            Ok(containers.is_empty() && self.runners()?.is_empty())
        })
        .map_err(|e| {
            format!(
                "{e}\n--- containers\n{}\n--- runners\n{:?}",
                self.s
                    .try_docker("ps --all", &[], LIMIT)
                    .unwrap_or_default(),
                self.runners().unwrap_or_default()
            )
        })
    }

    /// The controller's settings, as tests/scale.rs gives them, with these limits.
    fn settings(&self, set: &str, min: usize, max: usize) -> BTreeMap<String, String> {
        let min = min.to_string();
        let max = max.to_string();
        [
            ("REPO", "octo-org/octo-repo"),
            ("ACCESS_TOKEN", rig::TOKEN),
            ("GITHUB_URL", &self.url),
            ("GITHUB_API_URL", &self.url),
            ("SCALE_SET_NAME", set),
            ("SCALE_IMAGE", IMAGE),
            ("SCALE_RUNTIME", "runc"),
            ("SCALE_DOCKER_SOCKET", SOCKET),
            ("SCALE_STATE_DIR", "/var/lib/sysrunner/scale"),
            ("SCALE_MIN_RUNNERS", &min),
            ("SCALE_MAX_RUNNERS", &max),
            ("API_TIMEOUT", "5s"),
            ("API_DEADLINE", "30s"),
            ("LOG_FORMAT", "json"),
            ("NO_COLOR", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn controller(&self, env: &BTreeMap<String, String>, name: &str) -> Result<Controller, String> {
        let log = self.s.rig.b.paths().state.join(format!("{name}.log"));
        let child = self
            .s
            .rig
            .spawn_in_box(&self.s.rig.b.sysrunner_in_box(), &["scale"], env, &log)
            .map_err(|e| format!("spawn sysrunner scale: {e}"))?;
        Ok(Controller {
            child: Some(child),
            log,
        })
    }

    /// Queues every spec at once (concurrent control calls); each job's time is taken just
    /// before its own call.
    fn queue_at_once(&self, specs: Vec<JobSpec>) -> Result<Vec<Queued>, String> {
        let c = ControlClient::new(&self.url);
        self.s.rig.in_github_netns(async move {
            let calls: Vec<_> = specs
                .into_iter()
                .map(|spec| {
                    let c = c.clone();
                    tokio::spawn(async move {
                        let (at, wall) = (Instant::now(), SystemTime::now());
                        c.queue_job(&spec)
                            .await
                            .map(|j| Queued { id: j.id, at, wall })
                    })
                })
                .collect();
            let mut out = Vec::new();
            for call in calls {
                out.push(
                    call.await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| format!("queue a job: {e}"))?,
                );
            }
            Ok(out)
        })
    }

    /// Reads every job every [`POLL`] until all of `queued` have completed: when each was first
    /// seen busy (`in_progress`, or already `completed`) and completed. `also` runs after each
    /// read (the limit's `docker run` is watched with it).
    fn follow(
        &self,
        queued: &[u64],
        mut also: impl FnMut() -> Result<(), String>,
    ) -> Result<Vec<Seen>, String> {
        let end = Instant::now() + LIMIT;
        let mut seen = vec![Seen::default(); queued.len()];
        loop {
            let tick = Instant::now();
            let jobs = self.ctl(|c| async move { c.jobs().await })?;
            let now = Instant::now();
            for (s, id) in seen.iter_mut().zip(queued) {
                let Some(j) = jobs.iter().find(|j| j.id == *id) else {
                    continue;
                };
                let busy = matches!(j.status, JobStatus::InProgress | JobStatus::Completed);
                if busy && s.busy.is_none() {
                    s.busy = Some(now);
                    s.runner_id = j.runner_id;
                }
                if j.status == JobStatus::Completed && s.completed.is_none() {
                    s.completed = Some(now);
                    s.result = j.result;
                    s.output = j.output.clone();
                }
            }
            also()?;
            if seen.iter().all(|s| s.completed.is_some()) {
                break;
            }
            if now > end {
                let left = seen.iter().filter(|s| s.completed.is_none()).count();
                return Err(format!("{left} job(s) not completed within {LIMIT:?}"));
            }
            std::thread::sleep(POLL.saturating_sub(tick.elapsed()));
        }
        if let Some(s) = seen.iter().find(|s| s.result != Some(JobResult::Succeeded)) {
            return Err(format!("a job ended {:?}: {}", s.result, s.output));
        }
        Ok(seen)
    }

    /// The controller, warm or from zero, with `j` jobs queued at once.
    fn controller_variant(
        &self,
        run: u32,
        variant: Variant,
        j: usize,
    ) -> Result<Vec<Sample>, String> {
        let set = format!("bench-{}-{j}", variant.word());
        let min = if variant == Variant::Warm { j } else { 0 };
        let mut c = self.controller(&self.settings(&set, min, j), &set)?;
        let with_log = |e: String, c: &Controller| {
            format!(
                "{} × {j}: {e}\n--- controller\n{}",
                variant.title(),
                tail(&c.log())
            )
        };
        let prefix = format!("{set}-");
        let ready = if variant == Variant::Warm {
            self.until("the warm pool", || {
                let running = self.s.try_docker(
                    &format!("ps --quiet --filter label={LABEL_SET}={set} --filter status=running"),
                    &[],
                    LIMIT,
                )?;
                let online = self
                    .runners()?
                    .iter()
                    .filter(|r| r.name.starts_with(&prefix) && r.status == "online" && !r.busy)
                    .count();
                Ok(running.lines().count() == j && online == j)
            })
        } else {
            self.until("the message session", || {
                let sets = self.ctl(|c| async move { c.scale_sets().await })?;
                Ok(sets.iter().any(|s| s.name == set && s.session.is_some()))
            })
        };
        if let Err(e) = ready.and_then(|()| {
            if c.running() {
                Ok(())
            } else {
                Err("the controller exited".into())
            }
        }) {
            return Err(with_log(e, &c));
        }
        std::thread::sleep(SETTLE);
        let specs = (0..j)
            .map(|i| JobSpec {
                runner_name: String::new(),
                name: format!("{set}-job-{i}"),
                steps: vec![STEP.into()],
                scope: None,
                labels: vec![set.clone()],
            })
            .collect();
        let measured = self.queue_at_once(specs).and_then(|q| {
            let ids: Vec<u64> = q.iter().map(|q| q.id).collect();
            self.follow(&ids, || Ok(())).map(|seen| (q, seen))
        });
        let (queued, seen) = match measured {
            Ok(m) => m,
            Err(e) => return Err(with_log(e, &c)),
        };
        let stopped = c.stop();
        let log = c.log();
        stopped.map_err(|e| with_log(e, &c))?;
        let mut out = job_samples(run, variant, &queued, &seen);
        let first = queued.iter().map(|q| q.wall).min().expect("J ≥ 1");
        let events = log_events(&log);
        if let Some(at) = events
            .iter()
            .find(|(at, v)| *at >= first && v["message"] == "jobs acquired")
            .map(|(at, _)| *at)
        {
            out.push(sample(run, variant, j, None, ACQUIRED, since(first, at)));
        }
        if variant == Variant::Zero {
            for (i, (q, s)) in queued.iter().zip(&seen).enumerate() {
                let started = s.runner_id.and_then(|id| {
                    events.iter().find_map(|(at, v)| {
                        (v["message"] == "runner container started"
                            && v["runner_id"].as_u64() == Some(id))
                        .then_some(*at)
                    })
                });
                if let Some(at) = started {
                    out.push(sample(
                        run,
                        variant,
                        j,
                        Some(i + 1),
                        CONTAINER_STARTED,
                        since(q.wall, at),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// A controller's call: a JIT config for runner `name` in the repository, from the REST API
    /// (as crates/testkit/tests/scale_rig.rs makes one).
    fn jit_config(&self, name: &str) -> Result<String, String> {
        let url = self.url.clone();
        let body = json!({"name": name, "runner_group_id": 1, "labels": ["self-hosted"]});
        let answer: Result<(u16, Value), String> = self.s.rig.in_github_netns(async move {
            let resp = reqwest::Client::builder()
                .no_proxy()
                .build()
                .map_err(|e| e.to_string())?
                .post(format!(
                    "{url}/repos/octo-org/octo-repo/actions/runners/generate-jitconfig"
                ))
                .header("user-agent", "sysrunner-bench-scale")
                .header("authorization", format!("Bearer {}", rig::TOKEN))
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28")
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("POST generate-jitconfig: {e}"))?;
            let status = resp.status().as_u16();
            Ok((status, resp.json().await.map_err(|e| e.to_string())?))
        });
        let (status, answer) = answer?;
        if status != 201 {
            return Err(format!("generate-jitconfig answered {status}: {answer}"));
        }
        answer["encoded_jit_config"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no encoded_jit_config in {answer}"))
    }

    /// `docker run -d` of a runner container as the controller makes one (its environment, its
    /// tmpfs mounts, plain runc), through the box's docker CLI; the JIT config in the CLI's
    /// environment, never in its argv. Spawned, not waited for.
    fn docker_run(&self, name: &str, jit: &str) -> Result<Child, String> {
        let args = format!(
            "run -d --name {name} --label {LABEL_LIMIT} {TMPFS} \
             -e ACTIONS_RUNNER_INPUT_JITCONFIG \
             -e ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1 \
             -e DOCKERD=off {IMAGE}"
        );
        let mut cmd = self.s.rig.b.command("/bin/sh");
        cmd.env_clear()
            .env("HOME", "/root")
            .env("PATH", rig::BOX_PATH)
            .env("ACTIONS_RUNNER_INPUT_JITCONFIG", jit)
            .arg("-c")
            .arg(format!("exec {} -H {DOCKER_HOST} {args}", docker::DOCKER))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.spawn().map_err(|e| format!("docker {args}: {e}"))
    }

    /// One runner container with no controller: from zero (`docker run` → busy) or warm (its
    /// runner online, then the job queued → busy).
    fn limit(&self, run: u32, variant: Variant) -> Result<Vec<Sample>, String> {
        let name = format!("bench-{}-{run}", variant.word());
        let jit = self.jit_config(&name)?;
        let spec = JobSpec {
            runner_name: name.clone(),
            name: format!("{name}-job"),
            steps: vec![STEP.into()],
            scope: None,
            labels: vec![],
        };
        let mut out = Vec::new();
        let measured = if variant == Variant::LimitZero {
            let t = Instant::now();
            self.s
                .try_docker("version --format '{{.Server.Version}}'", &[], LIMIT)?;
            out.push(sample(run, variant, 1, None, CLI, ms(t.elapsed())));
            let job = self.queue_at_once(vec![spec])?[0];
            let (at, wall) = (Instant::now(), SystemTime::now());
            let mut cli = Some(self.docker_run(&name, &jit)?);
            let mut returned = None;
            let seen = self.follow(&[job.id], || {
                if let Some(c) = cli.as_mut()
                    && c.try_wait().map_err(|e| e.to_string())?.is_some()
                {
                    returned = Some(at.elapsed());
                    cli_result(cli.take().expect("just seen"))?;
                }
                Ok(())
            });
            if let Some(c) = cli {
                // Not returned by the job's end: waited for here.
                cli_result(c)?;
                returned = Some(at.elapsed());
            }
            if let Some(r) = returned {
                out.push(sample(run, variant, 1, None, DOCKER_RUN, ms(r)));
            }
            seen.map(|s| {
                (
                    Queued {
                        id: job.id,
                        at,
                        wall,
                    },
                    s,
                )
            })
        } else {
            cli_result(self.docker_run(&name, &jit)?)?;
            self.until("the runner online", || {
                Ok(self
                    .runners()?
                    .iter()
                    .any(|r| r.name == name && r.status == "online"))
            })?;
            std::thread::sleep(SETTLE);
            let job = self.queue_at_once(vec![spec])?[0];
            self.follow(&[job.id], || Ok(())).map(|s| (job, s))
        };
        let (queued, seen) = measured.map_err(|e| {
            format!(
                "{}: {e}\n--- container\n{}",
                variant.title(),
                tail(&self.s.logs(&name))
            )
        })?;
        let code = self.s.wait(&name, LIMIT)?;
        if code != 0 {
            return Err(format!(
                "{}: the container exited {code}\n{}",
                variant.title(),
                tail(&self.s.logs(&name))
            ));
        }
        if variant == Variant::LimitZero {
            // When runc started it, by dockerd's clock (the host's).
            let at = self.s.try_docker(
                &format!("inspect --format '{{{{.State.StartedAt}}}}' {name}"),
                &[],
                LIMIT,
            )?;
            if let Some(at) = rfc3339(&at) {
                out.push(sample(
                    run,
                    variant,
                    1,
                    Some(1),
                    CONTAINER_STARTED,
                    since(queued.wall, at),
                ));
            }
        }
        self.s.try_docker(&format!("rm {name}"), &[], LIMIT)?;
        out.extend(job_samples(run, variant, &[queued], &seen));
        Ok(out)
    }
}

/// The docker CLI's end (killed after [`LIMIT`]): an error with its stderr unless it exited 0.
fn cli_result(mut c: Child) -> Result<(), String> {
    if boxes::wait_within(&mut c, LIMIT)
        .map_err(|e| e.to_string())?
        .is_none()
    {
        let _ = c.kill();
    }
    let o = c.wait_with_output().map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "docker run: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

fn sample(
    run: u32,
    variant: Variant,
    jobs: usize,
    job: Option<usize>,
    metric: &'static str,
    value: f64,
) -> Sample {
    Sample {
        run,
        variant,
        jobs,
        job,
        metric,
        value,
    }
}

/// Each job's busy and completed times, and the run's time to all of them busy.
fn job_samples(run: u32, variant: Variant, queued: &[Queued], seen: &[Seen]) -> Vec<Sample> {
    let j = queued.len();
    let mut out = Vec::new();
    for (i, (q, s)) in queued.iter().zip(seen).enumerate() {
        if let Some(b) = s.busy {
            out.push(sample(run, variant, j, Some(i + 1), BUSY, ms(b - q.at)));
        }
        if let Some(c) = s.completed {
            out.push(sample(
                run,
                variant,
                j,
                Some(i + 1),
                COMPLETED,
                ms(c - q.at),
            ));
        }
    }
    let first = queued.iter().map(|q| q.at).min();
    let last = seen.iter().map(|s| s.busy).collect::<Option<Vec<_>>>();
    if let (Some(first), Some(last)) = (first, last.and_then(|l| l.into_iter().max())) {
        out.push(sample(run, variant, j, None, ALL_BUSY, ms(last - first)));
    }
    out
}

/// `at − from` in ms (negative when `at` came first).
fn since(from: SystemTime, at: SystemTime) -> f64 {
    match at.duration_since(from) {
        Ok(d) => ms(d),
        Err(e) => -ms(e.duration()),
    }
}

/// An RFC 3339 time (tracing's, Docker's).
fn rfc3339(ts: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(ts.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    let since = Duration::from_nanos(u64::try_from(t.unix_timestamp_nanos()).ok()?);
    Some(SystemTime::UNIX_EPOCH + since)
}

/// The lines of a JSON log (tracing's, flattened): each with its time.
fn log_events(log: &str) -> Vec<(SystemTime, Value)> {
    log.lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            let at = rfc3339(v.get("timestamp")?.as_str()?)?;
            Some((at, v))
        })
        .collect()
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A variant's numbers for one J.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub variant: Variant,
    pub jobs: usize,
    /// Jobs measured (all runs).
    pub n: usize,
    pub busy: Stats,
    /// Median over runs of the time to all J busy.
    pub all_busy: Option<f64>,
    pub completed: Option<Stats>,
}

fn values(samples: &[Sample], variant: Variant, jobs: usize, metric: &str) -> Vec<f64> {
    samples
        .iter()
        .filter(|s| s.variant == variant && s.jobs == jobs && s.metric == metric)
        .map(|s| s.value)
        .collect()
}

/// Warm and from zero for each J, then the limits.
pub fn rows(samples: &[Sample]) -> Vec<Row> {
    let mut keys: Vec<(usize, Variant)> = samples.iter().map(|s| (s.jobs, s.variant)).collect();
    keys.sort_by_key(|(j, v)| (matches!(v, Variant::LimitWarm | Variant::LimitZero), *j, *v));
    keys.dedup();
    keys.into_iter()
        .filter_map(|(jobs, variant)| {
            let busy = values(samples, variant, jobs, BUSY);
            Some(Row {
                variant,
                jobs,
                n: busy.len(),
                busy: Stats::of(&busy)?,
                all_busy: Stats::of(&values(samples, variant, jobs, ALL_BUSY)).map(|s| s.median),
                completed: Stats::of(&values(samples, variant, jobs, COMPLETED)),
            })
        })
        .collect()
}

fn or_dash(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.0}"))
}

/// The table on stdout.
pub fn table(samples: &[Sample], took: Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "sysrunner scale (ms; runner containers: plain runc, DOCKERD=off)\n  {:<20} {:>2} {:>4} {:>10} {:>8} {:>11} {:>10} {:>8}",
        "variant", "J", "jobs", "busy p50", "max", "all J busy", "done p50", "max"
    );
    for r in rows(samples) {
        let _ = writeln!(
            s,
            "  {:<20} {:>2} {:>4} {:>10.0} {:>8.0} {:>11} {:>10} {:>8}",
            r.variant.title(),
            r.jobs,
            r.n,
            r.busy.median,
            r.busy.max,
            or_dash(r.all_busy),
            or_dash(r.completed.map(|c| c.median)),
            or_dash(r.completed.map(|c| c.max)),
        );
    }
    for l in where_time_goes(samples) {
        let _ = writeln!(s, "{l}");
    }
    let _ = write!(s, "bench-scale took {:.0} s", took.as_secs_f64());
    s
}

/// Per job of a variant and J: its runner's container started → the job busy.
fn boots(samples: &[Sample], v: Variant, j: usize) -> Vec<f64> {
    samples
        .iter()
        .filter(|s| s.variant == v && s.jobs == j && s.metric == CONTAINER_STARTED)
        .filter_map(|c| {
            samples
                .iter()
                .find(|s| {
                    s.variant == v
                        && s.jobs == j
                        && s.run == c.run
                        && s.job == c.job
                        && s.metric == BUSY
                })
                .map(|b| b.value - c.value)
        })
        .collect()
}

/// Per variant and J, what the controller's log and the limits say of where the time goes.
pub fn where_time_goes(samples: &[Sample]) -> Vec<String> {
    let median = |v: &[f64]| Stats::of(v).map(|s| s.median);
    let mut out = Vec::new();
    for r in rows(samples) {
        let (v, j) = (r.variant, r.jobs);
        let busy = r.busy.median;
        let started = Stats::of(&values(samples, v, j, CONTAINER_STARTED));
        let boot = Stats::of(&boots(samples, v, j));
        match v {
            Variant::Warm => {
                if let Some(a) = median(&values(samples, v, j, ACQUIRED)) {
                    out.push(format!(
                        "warm × {j}: queued → the controller's `jobs acquired` {a:.0}; → busy p50 {busy:.0} (the listening runners' long polls answered, their start calls)"
                    ));
                }
            }
            Variant::Zero => {
                let a = median(&values(samples, v, j, ACQUIRED));
                if let (Some(a), Some(st), Some(boot)) = (a, started, boot) {
                    out.push(format!(
                        "from zero × {j}: queued → `jobs acquired` {a:.0}; → the job's runner's `runner container started` (its JIT config, the container's create and start) p50 {:.0}, max {:.0}; container started → busy (sysrunner's and the runner's start in it, its first poll) p50 {:.0}, max {:.0}",
                        st.median, st.max, boot.median, boot.max
                    ));
                }
            }
            Variant::LimitZero => {
                let d = median(&values(samples, v, j, DOCKER_RUN));
                let cli = median(&values(samples, v, j, CLI));
                if let (Some(d), Some(cli), Some(st), Some(boot)) = (d, cli, started, boot) {
                    out.push(format!(
                        "limit for from zero: `docker run -d` → runc started the container (its `State.StartedAt`) {:.0}; → the CLI returned {d:.0}; → busy {busy:.0}; container started → busy p50 {:.0}. Of this, the CLI's own cost (`docker version` through the box's exec and a shell, as `docker run` goes) is {cli:.0}, which the controller's Engine API calls do not pay",
                        st.median, boot.median
                    ));
                }
            }
            Variant::LimitWarm => {}
        }
    }
    out
}

pub fn write_csv(samples: &[Sample], path: &Path) -> Result<(), String> {
    let mut s = String::from("run,variant,jobs,job,metric,value\n");
    for x in samples {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{:.3}",
            x.run,
            x.variant.word(),
            x.jobs,
            x.job.map(|j| j.to_string()).unwrap_or_default(),
            x.metric,
            x.value
        );
    }
    std::fs::write(path, s).map_err(|e| format!("{}: {e}", path.display()))
}

/// The one command that regenerates the section with these options.
pub fn regenerate_command(opts: &Options) -> String {
    let jobs: Vec<String> = opts.jobs.iter().map(|j| j.to_string()).collect();
    format!(
        "cargo build --release -p sysrunner --bin sysrunner && cargo build -p sysrunner-testkit && sudo target/debug/sysrunner-testkit bench-scale --sysrunner target/release/sysrunner --runs {} --jobs {} --out {} --markdown BENCHMARK.md",
        opts.runs,
        jobs.join(","),
        opts.out.display()
    )
}

/// The sysbox-like box's dockerd (ms, the fastest way) from the headline of `bench`'s report.
fn sysbox_dockerd_ms(markdown: &str) -> Option<f64> {
    let line = markdown
        .lines()
        .find(|l| l.starts_with("- sysbox-like: to listening"))?;
    let (_, after) = line.split_once("(dockerd ")?;
    after.split_once(" ms")?.0.parse().ok()
}

/// The section, from [`START`] through [`END`] (no newline after it).
pub fn section(samples: &[Sample], opts: &Options, dockerd_ms: Option<f64>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{START}\n## sysrunner scale\n");
    let _ = writeln!(
        s,
        "Generated by `sysrunner-testkit bench-scale` (see `crates/testkit/src/bench/scale.rs` for what each number is); it rewrites this section only. Regenerate it with:\n\n```sh\n{}\n```\n",
        regenerate_command(opts)
    );
    let dockerd = dockerd_ms.map_or_else(String::new, |d| {
        format!(" (the sysbox-like box's dockerd: {d:.0} ms the fastest way)")
    });
    let _ = writeln!(
        s,
        "Runner containers here are plain runc containers with `DOCKERD=off` (`SCALE_RUNTIME=runc`), because this machine cannot start sysbox or privileged containers. A real sysbox runner also starts its inner dockerd, ~0.5 s per the headline above{dockerd}, which adds to the from-zero numbers (a warm runner's dockerd is up before its job comes).\n"
    );
    let _ = writeln!(
        s,
        "`sysrunner scale` runs in a privileged-like box with a real dockerd and the small runner image, against the fake GitHub; jobs are `echo ok`, queued at once with the scale set's label. **Warm**: `SCALE_MIN_RUNNERS=J`, J runners listening (containers running, runners online at the fake). **From zero**: `SCALE_MIN_RUNNERS=0`, no container. `SCALE_MAX_RUNNERS=J` in both. Times run from just before a job's queueing to its status at the fake becoming `in_progress` (its runner busy) and `completed`, polled every 10 ms (so up to 10 ms late; an `echo ok` often completes between two polls, and is then busy when seen completed); p50 and max over the jobs of {} interleaved runs, \"all J busy\" the median over runs of the first queueing to the last job busy. In ms.\n",
        opts.runs
    );
    let _ = writeln!(
        s,
        "| runners | J | jobs | queued → busy p50 | max | all J busy | queued → completed p50 | max |\n|---|---|---|---|---|---|---|---|"
    );
    for r in rows(samples) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.0} | {} | {} | {} |",
            r.variant.title(),
            r.jobs,
            r.n,
            r.busy.median,
            r.busy.max,
            or_dash(r.all_busy),
            or_dash(r.completed.map(|c| c.median)),
            or_dash(r.completed.map(|c| c.max)),
        );
    }
    let _ = writeln!(
        s,
        "\nThe limits: one runner container, no controller, started with `docker run -d` through the box's docker CLI with the controller's container settings (its environment, its tmpfs mounts, plain runc) and a JIT config from the fake's REST `generate-jitconfig` made before the clock starts, for a job queued by runner name.\n\n- **limit for from zero**: the job queued first; timed from `docker run` (its CLI's start included) to the job busy: what one container can do from nothing, with no message queue, no JIT config and no controller on the way; it does pay the docker CLI's own start, which the controller (the Engine API over the socket) does not (its size is below).\n- **limit for warm**: timed from the job's queueing, once the runner is online at the fake and a second has passed, to the job busy: the fake's job delivery to a listening runner and the runner's start of the job, with no controller between. The warm variant adds the scale set's path on top: the job's message to the controller, its `acquirejobs`, and only then the runner's long poll answered.\n"
    );
    let lines = where_time_goes(samples);
    if !lines.is_empty() {
        let _ = writeln!(
            s,
            "Where the time goes (medians unless said, ms after the job's queueing; the controller's times from its JSON log). The controller logs `runner container started` when its event loop gets to the start's event, which waits behind what that loop is awaiting (a message, an idle runner's removal at GitHub), so those times can be late, most at J=8: container started → busy is then short, or even negative.\n"
        );
        for l in lines {
            let _ = writeln!(s, "- {l}");
        }
        let _ = writeln!(s);
    }
    let _ = write!(s, "{END}");
    s
}

/// `text`'s scale section, [`START`] through [`END`], if it has one.
pub fn section_of(text: &str) -> Option<&str> {
    let a = text.find(START)?;
    let b = a + text[a..].find(END)? + END.len();
    Some(&text[a..b])
}

/// `text` with its scale section replaced by `section`, or with `section` appended at its end.
pub fn splice(text: &str, section: &str) -> String {
    match section_of(text) {
        Some(old) => {
            let a = text.find(old).expect("found just now");
            format!("{}{section}{}", &text[..a], &text[a + old.len()..])
        }
        None if text.trim().is_empty() => format!("{section}\n"),
        None => format!("{}\n\n{section}\n", text.trim_end()),
    }
}

fn write_markdown(samples: &[Sample], path: &Path, opts: &Options) -> Result<(), String> {
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let new = splice(&old, &section(samples, opts, sysbox_dockerd_ms(&old)));
    std::fs::write(path, new).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(
        run: u32,
        variant: Variant,
        jobs: usize,
        job: Option<usize>,
        m: &'static str,
        v: f64,
    ) -> Sample {
        sample(run, variant, jobs, job, m, v)
    }

    #[test]
    fn the_section_is_replaced_in_place_or_appended() {
        let sec = format!("{START}\nnew\n{END}");
        let text = format!("# B\n\nbefore\n\n{START}\nold\n{END}\n\nafter\n");
        assert_eq!(
            splice(&text, &sec),
            format!("# B\n\nbefore\n\n{START}\nnew\n{END}\n\nafter\n")
        );
        assert_eq!(
            splice("# B\n\ntext\n\n", &sec),
            format!("# B\n\ntext\n\n{sec}\n")
        );
        assert_eq!(splice("", &sec), format!("{sec}\n"));
        assert_eq!(
            section_of(&text),
            Some(format!("{START}\nold\n{END}").as_str())
        );
        assert_eq!(section_of("# B\n"), None);
        assert_eq!(section_of(&format!("{START}\nno end")), None);
    }

    #[test]
    fn rows_are_per_variant_and_j_with_the_limits_last() {
        let mut v = Vec::new();
        for run in 1..=2 {
            v.push(s(run, Variant::LimitZero, 1, Some(1), BUSY, 300.0));
            for job in 1..=2 {
                v.push(s(
                    run,
                    Variant::Zero,
                    2,
                    Some(job),
                    BUSY,
                    400.0 + job as f64,
                ));
                v.push(s(run, Variant::Zero, 2, Some(job), COMPLETED, 500.0));
                v.push(s(
                    run,
                    Variant::Zero,
                    2,
                    Some(job),
                    CONTAINER_STARTED,
                    100.0,
                ));
                v.push(s(run, Variant::Warm, 2, Some(job), BUSY, 20.0 * run as f64));
            }
            v.push(s(run, Variant::Zero, 2, None, ALL_BUSY, 402.0 + run as f64));
            v.push(s(run, Variant::Zero, 2, None, ACQUIRED, 5.0));
            v.push(s(run, Variant::Warm, 1, Some(1), BUSY, 10.0));
        }
        let r = rows(&v);
        let order: Vec<(Variant, usize)> = r.iter().map(|r| (r.variant, r.jobs)).collect();
        assert_eq!(
            order,
            vec![
                (Variant::Warm, 1),
                (Variant::Warm, 2),
                (Variant::Zero, 2),
                (Variant::LimitZero, 1)
            ]
        );
        let zero = &r[2];
        assert_eq!(zero.n, 4);
        assert_eq!((zero.busy.median, zero.busy.max), (401.5, 402.0));
        assert_eq!(zero.all_busy, Some(403.5));
        assert_eq!(r[1].busy.max, 40.0);
        assert!(r[0].completed.is_none());
        let lines = where_time_goes(&v);
        assert!(
            lines.iter().any(|l| l.contains("container started → busy")
                && l.contains("p50 302")
                && l.contains("`jobs acquired` 5")),
            "{lines:?}"
        );
    }

    #[test]
    fn the_sysbox_dockerd_is_read_off_the_headline() {
        let md = "## Headline\n\n- sysbox-like: to listening in 486 ms from its own start, 1.04× the limit of 465 ms (dockerd 453 ms the fastest way, registration 15 ms)\n";
        assert_eq!(sysbox_dockerd_ms(md), Some(453.0));
        assert_eq!(sysbox_dockerd_ms("# nothing"), None);
    }

    #[test]
    fn the_csv_has_a_row_per_sample() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("scale.csv");
        let v = vec![
            s(1, Variant::Warm, 4, Some(2), BUSY, 12.5),
            s(1, Variant::LimitZero, 1, None, DOCKER_RUN, 80.0),
        ];
        write_csv(&v, &p).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "run,variant,jobs,job,metric,value\n1,warm,4,2,busy_ms,12.500\n1,limit-zero,1,,docker_run_returned_ms,80.000\n"
        );
    }
}
