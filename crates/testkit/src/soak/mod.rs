//! A seeded soak: lives of `sysrunner run` in the boxes against the fake GitHub, each drawn from
//! the seed ([`plan`]) with zero to three faults, each checked against what README's contract
//! allows for those faults ([`allowed`]) and against the invariants: no registration left once
//! the next life (or `sysrunner prune`) has run, no process left in the box, no secret in the
//! life's log. A failure names the seed and the life; `--seed S --from K` replays from it.

pub mod allowed;
pub mod plan;
pub mod scale;
pub mod scale_allowed;
pub mod scale_plan;

pub use plan::{BoxChoice, Fault, LifePlan, SoakBox, plan};

use crate::BoxKind;
use crate::fake_github::{
    self, ControlClient, FakeConfig, FaultRule, JobStatus, NewRunner, SetRunnerState,
};
use crate::rig::{Rig, TOKEN};
use nix::sys::signal::Signal;
use plan::{ApiTarget, Moment, Registration, Sig};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest one life may take before it counts as hung.
const LIFE_LIMIT: Duration = Duration::from_secs(150);
/// A hang: past the rig's API_TIMEOUT (5 s).
const HANG_MILLIS: u64 = 6_000;

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub lives: u64,
    pub from: u64,
    pub boxes: BoxChoice,
    pub sysrunner: PathBuf,
    /// Show an indicatif progress line.
    pub progress: bool,
    /// Stop starting lives after this long (the lives run so far are reported).
    pub budget: Option<Duration>,
}

/// One life's outcome.
#[derive(Debug, Clone)]
pub struct LifeReport {
    pub plan: LifePlan,
    pub exit: Option<i32>,
    pub job: allowed::JobEnd,
    pub took: Duration,
    pub failures: Vec<String>,
    /// The fault kinds whose rule or action actually fired.
    pub fired: Vec<&'static str>,
    pub log: PathBuf,
    /// The job was the one an earlier life of the box left queued (`plan.job` is its kind).
    pub carried: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub seed: u64,
    pub lives: Vec<LifeReport>,
    /// Failures found after the last life (prune, leftovers).
    pub end_failures: Vec<String>,
    pub took: Duration,
}

impl Report {
    pub fn failed(&self) -> bool {
        !self.end_failures.is_empty() || self.lives.iter().any(|l| !l.failures.is_empty())
    }

    /// The summary table: lives per box, counts per fault kind (drawn / fired), failures with
    /// their replay command.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let boxes: BTreeMap<String, usize> = self.lives.iter().fold(BTreeMap::new(), |mut m, l| {
            *m.entry(format!("{:?}", l.plan.boxed)).or_default() += 1;
            m
        });
        let _ = writeln!(
            s,
            "soak seed {}: {} lives in {:.0?} ({}), {} failed",
            self.seed,
            self.lives.len(),
            self.took,
            boxes
                .iter()
                .map(|(b, n)| format!("{b} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.lives.iter().filter(|l| !l.failures.is_empty()).count()
        );
        let mut drawn: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for l in &self.lives {
            for f in &l.plan.faults {
                drawn.entry(f.kind()).or_default().0 += 1;
            }
            for k in &l.fired {
                drawn.entry(k).or_default().1 += 1;
            }
        }
        let mut exits: BTreeMap<String, usize> = BTreeMap::new();
        for l in &self.lives {
            *exits
                .entry(l.exit.map_or("none".into(), |c| c.to_string()))
                .or_default() += 1;
        }
        let _ = writeln!(s, "{:<22} {:>6} {:>6}", "fault", "drawn", "fired");
        for (k, (d, f)) in &drawn {
            let _ = writeln!(s, "{k:<22} {d:>6} {f:>6}");
        }
        let _ = writeln!(
            s,
            "exit codes: {}",
            exits
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for l in self.lives.iter().filter(|l| !l.failures.is_empty()) {
            let _ = writeln!(s, "FAILED seed {} {}", self.seed, l.plan);
            for f in &l.failures {
                let _ = writeln!(s, "  - {f}");
            }
            let _ = writeln!(s, "  log: {}", l.log.display());
            let _ = writeln!(
                s,
                "  replay (the life and the one before it, in one box): sysrunner-testkit soak --seed {} --from {} --lives 2 --box {}",
                self.seed,
                l.plan.life.saturating_sub(1),
                match l.plan.boxed {
                    SoakBox::Sysbox => "sysbox",
                    SoakBox::Privileged => "privileged",
                }
            );
        }
        for f in &self.end_failures {
            let _ = writeln!(s, "FAILED at the end (seed {}): {f}", self.seed);
        }
        s
    }
}

/// How long the fake waits before it takes a silent runner (its box SIGKILLed) for gone, as
/// GitHub does after a while: short, so that the next life meets the old runner sometimes still
/// busy (it then registers under a name of its own) and sometimes already offline (it deletes it).
const SESSION_IDLE_SECS: u64 = 5;

/// Whether `runner` is a runner of this box's lives: the box's name, or the name of its own a life
/// takes while the runner an earlier life left is still busy (`NAME-` and 4 hex digits; README).
fn of_box(runner: &str, name: &str) -> bool {
    runner == name
        || runner.strip_prefix(name).is_some_and(|rest| {
            rest.len() == 5
                && rest.starts_with('-')
                && rest[1..].chars().all(|c| c.is_ascii_hexdigit())
        })
}

/// A box's rig and what its lives left for the next one to clean up.
struct BoxState {
    rig: Rig,
    /// Registrations an earlier life left (allowed by its faults): (life, runner id). Gone after
    /// the next life that registered under the box's name (README: a life deletes what earlier
    /// lives left before it registers; one that finds it still busy registers under a name of its
    /// own, and a later life deletes it; a life that ends before registering may not get to it).
    pending: Vec<(u64, u64)>,
    /// The job a life left queued (no runner took it): the next life, whose runner has the same
    /// name, takes it instead of a job of its own.
    carried: Option<(u64, plan::JobKind)>,
    /// The runner's name, the same for every life of the box (a container restarting).
    name: String,
    logs: PathBuf,
}

fn kind_of(b: SoakBox) -> BoxKind {
    match b {
        SoakBox::Sysbox => BoxKind::SysboxLike,
        SoakBox::Privileged => BoxKind::PrivilegedLike,
    }
}

fn control(rig: &Rig) -> ControlClient {
    ControlClient::new(&rig.url)
}

fn api_path(t: ApiTarget, reg: Registration) -> (&'static str, &'static str) {
    match (t, reg) {
        (ApiTarget::Register, Registration::Jit) => {
            ("POST", "*/actions/runners/generate-jitconfig")
        }
        (ApiTarget::Register, Registration::Config) => {
            ("POST", "*/actions/runners/registration-token")
        }
        (ApiTarget::Delete, _) => ("DELETE", "*/actions/runners/*"),
        (ApiTarget::Downloads, _) => ("GET", "*/actions/runners/downloads"),
    }
}

fn rule(f: &Fault, reg: Registration) -> Option<FaultRule> {
    let (method, path) = api_path(f.target()?, reg);
    let (count, fault) = match *f {
        Fault::Burst5xx { status, count, .. } => {
            (count, fake_github::Fault::ServerError { status })
        }
        Fault::TooMany { retry_after, .. } => (
            1,
            fake_github::Fault::TooManyRequests {
                retry_after_secs: retry_after,
            },
        ),
        Fault::Secondary { retry_after, .. } => (
            1,
            fake_github::Fault::SecondaryRateLimit {
                retry_after_secs: Some(retry_after),
            },
        ),
        Fault::Hang { .. } => (
            1,
            fake_github::Fault::Hang {
                millis: HANG_MILLIS,
            },
        ),
        Fault::Drop { .. } => (1, fake_github::Fault::DropAfterEffect),
        _ => return None,
    };
    Some(FaultRule {
        method: method.into(),
        path: path.into(),
        count,
        fault,
    })
}

/// The secrets a life's log must not hold: the PAT, and every JIT config and registration token
/// the fake handed out.
fn secrets(rig: &Rig) -> Vec<String> {
    let mut s = vec![TOKEN.to_string()];
    for q in rig.requests() {
        let Some(body) = &q.response_body else {
            continue;
        };
        for key in ["encoded_jit_config", "token"] {
            if let Some(v) = body.get(key).and_then(|v| v.as_str())
                && v.len() >= 8
            {
                s.push(v.to_string());
            }
        }
    }
    s
}

/// A timed action of the life.
struct Action {
    at: Moment,
    /// Added to the moment: a second signal's delay.
    plus: Duration,
    what: Fault,
    second: bool,
}

/// Deletes a runner through the REST API, as its owner would (the soak's own duplicate).
fn delete_runner(rig: &Rig, id: u64) {
    let url = rig.url.clone();
    rig.in_github_netns(async move {
        let _ = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("a plain client")
            .delete(format!(
                "{url}/repos/octo-org/octo-repo/actions/runners/{id}"
            ))
            .header("user-agent", "sysrunner-testkit-soak")
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .send()
            .await;
    });
}

/// A container's death: every process of the box SIGKILLed, again until none is left.
fn kill_box(rig: &Rig) {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        let pids = rig.b.pids().unwrap_or_default();
        if pids.is_empty() {
            return;
        }
        for p in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_life(st: &mut BoxState, plan: &LifePlan, sysrunner_in_box: &Path) -> LifeReport {
    let rig = &st.rig;
    let t0 = Instant::now();
    let mut failures = Vec::new();
    let mut fired: Vec<&'static str> = Vec::new();
    let name = st.name.clone();
    let log = st.logs.join(format!("life-{}.log", plan.life));
    let mut env = rig.settings(&name);
    if plan.registration == Registration::Config {
        env.insert("REGISTRATION".into(), "config".into());
    }
    for f in &plan.faults {
        if let Fault::ListenerExit { code } = f {
            env.insert("FAKE_RUNNER_EXIT".into(), code.to_string());
        }
    }
    let ctl = control(rig);
    let mut rules = Vec::new();
    for f in &plan.faults {
        if let Some(r) = rule(f, plan.registration) {
            let c = ctl.clone();
            let r2 = r.clone();
            match rig.in_github_netns(async move { c.add_fault(&r2).await }) {
                Ok(id) => rules.push((id, r.count, f.kind())),
                Err(e) => failures.push(format!("the kit could not add the fault {f}: {e}")),
            }
        }
    }
    // A runner of the name registered before the life. When an earlier life of the box left one
    // of the name (its own record), that one is the leftover this life meets: the kit cannot
    // stage another (GitHub refuses a second runner of a name), so the drawn fault is dropped
    // and the table judges the life without it.
    let mut foreign: Option<u64> = None;
    let mut dropped: Option<Fault> = None;
    for f in &plan.faults {
        if let Fault::Leftover { online } = *f {
            if rig.runners().iter().any(|r| r.name == name) {
                dropped = Some(*f);
                continue;
            }
            let c = ctl.clone();
            let new = NewRunner {
                scope: "repos/octo-org/octo-repo".into(),
                name: name.clone(),
                labels: vec![],
                runner_group_id: None,
                ephemeral: true,
            };
            let made = rig.in_github_netns(async move {
                let r = c.create_runner(&new).await?;
                if online {
                    let set = SetRunnerState {
                        status: Some("online".into()),
                        busy: None,
                    };
                    c.set_runner_state(r.id, &set).await?;
                }
                Ok::<_, fake_github::ControlError>(r.id)
            });
            match made {
                Ok(id) => {
                    if online {
                        foreign = Some(id);
                    }
                }
                Err(e) => failures.push(format!("the kit could not register {f}: {e}")),
            }
        }
    }
    let carried = st.carried.is_some();
    let (mut job, job_kind) = match st.carried.take() {
        Some((id, kind)) => (rig.job(id), kind),
        None => (rig.queue(&name, "soak", plan.job.steps()), plan.job),
    };
    let mut actions: Vec<Action> = Vec::new();
    for f in &plan.faults {
        match *f {
            Fault::Signal { at, again_ms, .. } => {
                actions.push(Action {
                    at,
                    plus: Duration::ZERO,
                    what: *f,
                    second: false,
                });
                if let Some(a) = again_ms {
                    actions.push(Action {
                        at,
                        plus: Duration::from_millis(a),
                        what: *f,
                        second: true,
                    });
                }
            }
            Fault::KillDockerd { at } | Fault::BoxKill { at } => actions.push(Action {
                at,
                plus: Duration::ZERO,
                what: *f,
                second: false,
            }),
            _ => {}
        }
    }
    let mut child = match rig.spawn_in_box(sysrunner_in_box, &["run"], &env, &log) {
        Ok(c) => c,
        Err(e) => {
            failures.push(format!("spawn: {e}"));
            return LifeReport {
                plan: plan.clone(),
                carried: false,
                exit: None,
                job: None,
                took: t0.elapsed(),
                failures,
                fired,
                log,
            };
        }
    };
    let started = Instant::now();
    let mut online_at: Option<Instant> = None;
    let mut busy_at: Option<Instant> = None;
    let mut last_poll = Instant::now() - Duration::from_secs(1);
    let mut done = vec![false; actions.len()];
    let mut box_killed = false;
    // The life registered under a name of its own (the runner an earlier life left was still
    // busy): the job queued for the box's name waits for the next life, and one is queued for the
    // new name; `Some(the job left for the box's name)` once that happened.
    let mut own_name = false;
    let mut left_for_name: Option<u64> = None;
    let pending: Vec<u64> = st.pending.iter().map(|p| p.1).collect();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(e) => {
                failures.push(format!("wait: {e}"));
                break None;
            }
        }
        if started.elapsed() > LIFE_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            failures.push(format!("the life did not end within {LIFE_LIMIT:?}"));
            break None;
        }
        // The anchors, polled at the fake while an action waits for one.
        let waiting = actions.iter().zip(&done).any(|(a, d)| {
            !d && matches!(
                (a.at, online_at, busy_at),
                (Moment::Online(_), None, _) | (Moment::Busy(_), _, None)
            )
        });
        if (waiting || !own_name) && last_poll.elapsed() >= Duration::from_millis(100) {
            last_poll = Instant::now();
            let runners = rig.runners();
            let ours = |r: &&crate::fake_github::RunnerState| {
                of_box(&r.name, &name) && Some(r.id) != foreign && !pending.contains(&r.id)
            };
            if online_at.is_none() && runners.iter().filter(ours).any(|r| r.status == "online") {
                online_at = Some(Instant::now());
            }
            if !own_name && let Some(r) = runners.iter().filter(ours).find(|r| r.name != name) {
                own_name = true;
                if rig.job(job.id).status == JobStatus::Queued {
                    left_for_name = Some(job.id);
                    job = rig.queue(&r.name, "soak", job_kind.steps());
                }
            }
            if busy_at.is_none() && rig.job(job.id).status == JobStatus::InProgress {
                busy_at = Some(Instant::now());
            }
        }
        for (i, a) in actions.iter().enumerate() {
            if done[i] {
                continue;
            }
            let due = match a.at {
                Moment::Start(ms) => Some(started + Duration::from_millis(ms)),
                Moment::Online(ms) => online_at.map(|t| t + Duration::from_millis(ms)),
                Moment::Busy(ms) => busy_at.map(|t| t + Duration::from_millis(ms)),
            }
            .map(|t| t + a.plus);
            if due.is_none_or(|t| Instant::now() < t) {
                continue;
            }
            done[i] = true;
            match a.what {
                Fault::Signal { sig, .. } => {
                    let s = match sig {
                        Sig::Term => Signal::SIGTERM,
                        Sig::Int => Signal::SIGINT,
                    };
                    if crate::boxes::signal(child.id(), s).is_ok() && !a.second {
                        fired.push(a.what.kind());
                    }
                }
                Fault::KillDockerd { .. } => {
                    if let Some(pid) = rig.box_pid("dockerd") {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            Signal::SIGKILL,
                        );
                        fired.push(a.what.kind());
                    }
                }
                Fault::BoxKill { .. } => {
                    kill_box(rig);
                    box_killed = true;
                    fired.push(a.what.kind());
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let exit = if box_killed {
        None
    } else {
        status.and_then(|s| s.code())
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();

    // Which API faults fired; none may carry over to the next life.
    let left: BTreeMap<u64, u32> = {
        let c = ctl.clone();
        rig.in_github_netns(async move { c.faults().await })
            .map(|v| v.into_iter().map(|f| (f.id, f.remaining)).collect())
            .unwrap_or_default()
    };
    for (id, count, kind) in &rules {
        if left.get(id).is_none_or(|r| r < count) {
            fired.push(kind);
        }
    }
    let c = ctl.clone();
    let _ = rig.in_github_netns(async move { c.clear_faults().await });
    if plan
        .faults
        .iter()
        .any(|f| matches!(f, Fault::ListenerExit { .. }))
        && text.contains("Listening for Jobs")
    {
        let f = plan
            .faults
            .iter()
            .find(|f| matches!(f, Fault::ListenerExit { .. }))
            .expect("found above");
        fired.push(f.kind());
    }

    if plan
        .faults
        .iter()
        .any(|f| matches!(f, Fault::Leftover { .. }))
        && dropped.is_none()
    {
        let f = plan
            .faults
            .iter()
            .find(|f| matches!(f, Fault::Leftover { .. }))
            .expect("found above");
        fired.push(f.kind());
    }

    // The outcome against the table.
    let job_now = rig.job(job.id);
    let job_end = match job_now.status {
        JobStatus::Completed => job_now.result,
        _ => None,
    };
    if let Some(id) = left_for_name {
        st.carried = Some((id, job_kind));
    } else if job_now.status == JobStatus::Queued {
        st.carried = Some((job.id, job_kind));
    }
    let allowed = allowed::allowed(&LifePlan {
        job: job_kind,
        faults: plan
            .faults
            .iter()
            .filter(|f| Some(**f) != dropped)
            .copied()
            .collect(),
        ..plan.clone()
    });
    if !allowed.allows_exit(exit) || !allowed.allows_job(job_end) {
        failures.push(format!(
            "exit {exit:?}, job {job_end:?} ({:?}); allowed: {}",
            job_now.status,
            allowed.describe()
        ));
    }

    // The box holds no process once the life is over.
    match rig.pids_left() {
        Ok(p) if p.is_empty() => {}
        Ok(p) => {
            let comms: Vec<String> = p
                .iter()
                .map(|pid| {
                    let c = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                        .unwrap_or_default()
                        .replace('\0', " ");
                    format!("{pid} {}", c.trim())
                })
                .collect();
            failures.push(format!(
                "processes left in the box 10 s after the end: {comms:?}"
            ));
            // For the next life: a box that holds nothing.
            for pid in p {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        Err(e) => failures.push(format!("list the box's processes: {e}")),
    }

    // Registrations: what the previous life left is gone now; this life left none, unless its
    // faults allow it (then the next life must delete it).
    if let Some(id) = foreign {
        let c = ctl.clone();
        let set = SetRunnerState {
            status: Some("offline".into()),
            busy: None,
        };
        let _ = rig.in_github_netns(async move { c.set_runner_state(id, &set).await });
        delete_runner(rig, id);
    }
    let runners = rig.runners();
    let registered =
        text.contains("phase=\"registered\"") || text.contains("\"phase\":\"registered\"");
    for (life, id) in std::mem::take(&mut st.pending) {
        if runners.iter().any(|r| r.id == id) {
            if own_name || !registered {
                st.pending.push((life, id));
            } else {
                failures.push(format!(
                    "runner {id} left by life {life} is still registered after life {}",
                    plan.life
                ));
            }
        }
    }
    let mine: Vec<_> = runners
        .iter()
        .filter(|r| of_box(&r.name, &name) && !st.pending.iter().any(|p| p.1 == r.id))
        .collect();
    if !mine.is_empty() {
        match allowed.leftover {
            Some(_) => st.pending.extend(mine.iter().map(|r| (plan.life, r.id))),
            None => failures.push(format!(
                "still registered after the life: {:?}",
                mine.iter()
                    .map(|r| (&r.name, r.id, &r.status))
                    .collect::<Vec<_>>()
            )),
        }
    }
    let others: Vec<_> = runners
        .iter()
        .filter(|r| !of_box(&r.name, &name) && !st.pending.iter().any(|p| p.1 == r.id))
        .collect();
    if !others.is_empty() {
        failures.push(format!(
            "registrations of earlier lives still at GitHub: {:?}",
            others.iter().map(|r| (&r.name, r.id)).collect::<Vec<_>>()
        ));
    }

    // After a failure, a clean slate for the next life: what is still registered is taken away
    // as GitHub's owner would (offline, idle, deleted), so one failure does not cascade.
    if !failures.is_empty() {
        for r in rig.runners() {
            if st.pending.iter().any(|p| p.1 == r.id) {
                continue;
            }
            let c = ctl.clone();
            let set = SetRunnerState {
                status: Some("offline".into()),
                busy: Some(false),
            };
            let id = r.id;
            let _ = rig.in_github_netns(async move { c.set_runner_state(id, &set).await });
            delete_runner(rig, id);
        }
    }

    // No secret in the log.
    for s in secrets(rig) {
        if text.contains(&s) {
            let what = if s == TOKEN {
                "the PAT"
            } else {
                "a JIT config or registration token"
            };
            failures.push(format!("{what} is in the life's log"));
        }
    }

    LifeReport {
        plan: LifePlan {
            job: job_kind,
            ..plan.clone()
        },
        carried,
        exit,
        job: job_end,
        took: t0.elapsed(),
        failures,
        fired,
        log,
    }
}

/// `sysrunner prune --yes` in the box, then nothing registered.
fn prune(st: &BoxState, sysrunner_in_box: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if st.rig.runners().is_empty() {
        return out;
    }
    // A runner whose box was SIGKILLed is offline once GitHub (the fake) has not heard from it for
    // a while; `prune` deletes offline runners only.
    st.rig
        .until(Duration::from_secs(SESSION_IDLE_SECS + 3), |r| {
            r.runners().iter().all(|r| r.status == "offline")
        });
    let env = st.rig.settings("sysrunner-soak-prune");
    let log = st.logs.join("prune.log");
    match st.rig.spawn_in_box(
        sysrunner_in_box,
        &["prune", "--yes", "--grace", "1s"],
        &env,
        &log,
    ) {
        Ok(mut c) => {
            let _ = crate::boxes::wait_within(&mut c, Duration::from_secs(60));
            let _ = c.kill();
            let _ = c.wait();
        }
        Err(e) => out.push(format!("spawn prune: {e}")),
    }
    let left = st.rig.runners();
    if !left.is_empty() {
        out.push(format!(
            "still registered after `sysrunner prune --yes`: {:?}\n{}",
            left.iter()
                .map(|r| (&r.name, r.id, &r.status))
                .collect::<Vec<_>>(),
            std::fs::read_to_string(&log).unwrap_or_default()
        ));
    }
    out
}

/// Runs the soak: lives `from..from+lives` of `seed`.
pub fn run(o: &Options) -> Result<Report, String> {
    let t0 = Instant::now();
    let logs = tempfile::Builder::new()
        .prefix(&format!("soak-{}-", o.seed))
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let plans: Vec<LifePlan> = (o.from..o.from + o.lives)
        .map(|l| plan(o.seed, l, o.boxes))
        .collect();
    let needed: BTreeSet<SoakBox> = plans.iter().map(|p| p.boxed).collect();
    let mut boxes: BTreeMap<SoakBox, BoxState> = BTreeMap::new();
    for b in needed {
        let cfg = FakeConfig {
            runner_session_idle_secs: SESSION_IDLE_SECS,
            ..FakeConfig::default()
        };
        let rig = Rig::start(kind_of(b), cfg, &o.sysrunner)?;
        let dir = logs.join(format!("{b:?}").to_lowercase());
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        boxes.insert(
            b,
            BoxState {
                rig,
                pending: Vec::new(),
                carried: None,
                name: format!("sysrunner-soak-{b:?}").to_lowercase(),
                logs: dir,
            },
        );
    }
    let bar = if o.progress {
        let b = indicatif::ProgressBar::new(o.lives);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "[{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .expect("a valid template"),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut report = Report {
        seed: o.seed,
        ..Report::default()
    };
    let mut failed = 0;
    for p in &plans {
        if o.budget.is_some_and(|b| t0.elapsed() > b) {
            bar.println(format!("budget spent: stopping before life {}", p.life));
            break;
        }
        bar.set_message(format!("{failed} failed | {p}"));
        let st = boxes.get_mut(&p.boxed).expect("a rig per box drawn");
        let sysrunner_in_box = st.rig.b.sysrunner_in_box();
        let l = run_life(st, p, &sysrunner_in_box);
        if !l.failures.is_empty() {
            failed += 1;
            bar.println(format!(
                "FAILED seed {} {} -> exit {:?}, job {:?}\n  {}\n  log: {}",
                o.seed,
                l.plan,
                l.exit,
                l.job,
                l.failures.join("\n  "),
                l.log.display()
            ));
        } else if !o.progress {
            eprintln!(
                "ok seed {} {}{} -> exit {:?}, job {:?} in {:.1?}",
                o.seed,
                l.plan,
                if l.carried { " (job carried over)" } else { "" },
                l.exit,
                l.job,
                l.took
            );
        }
        report.lives.push(l);
        bar.inc(1);
    }
    bar.finish_and_clear();
    for st in boxes.values() {
        let sysrunner_in_box = st.rig.b.sysrunner_in_box();
        report.end_failures.extend(prune(st, &sysrunner_in_box));
    }
    report.took = t0.elapsed();
    Ok(report)
}
