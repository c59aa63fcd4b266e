//! The scale mode of the soak (`sysrunner-testkit soak --scale`): ONE `sysrunner scale`
//! controller per soak, in a [`ScaleRig`] (a privileged-like box with a real dockerd and the small
//! runner image, the fake GitHub in its own network namespace), started again whenever a round's
//! fault ended it. Round K of seed S ([`super::scale_plan`]) queues 1-4 jobs for the scale set's
//! label and draws zero to two faults: GitHub's 5xx, 429 or a hang on a scale set endpoint, a
//! runner container killed idle or busy, the controller SIGKILLed or SIGTERMed (then started
//! again), its message session deleted at GitHub. Each round is checked against
//! [`super::scale_allowed`], a table written from README's contract, and against the invariants
//! once it quiesces: the warm pool and nothing else, `/healthz` answering, no secret in a log.
//! After the last round a final SIGTERM must leave nothing: no container, no runner, no session.

use super::scale_allowed::{self as table, Allowed, Cut};
use super::scale_plan::{self, RoundPlan, ScaleFault, ScaleJob};
use crate::fake_github::{
    self, ControlClient, ControlError, FakeConfig, FaultRule, Job, JobResult, JobSpec, JobStatus,
    RunJob, RunnerState,
};
use crate::rig::TOKEN;
use crate::scale_rig::{IMAGE, SOCKET, ScaleRig};
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The scale set, and the label its jobs ask for (`runs-on:` names the scale set).
pub const SET: &str = "scale-soak";
/// Where the controller serves `/metrics` and `/healthz` in the box.
const LISTEN: &str = "127.0.0.1:9102";
const LABEL_SET: &str = "sysrunner.scale-set";
/// A hang: past API_TIMEOUT (5 s).
const HANG_MILLIS: u64 = 6_000;
/// The longest a round's jobs may take to complete.
const ROUND_LIMIT: Duration = Duration::from_secs(180);
/// How long a round may take to quiesce once its jobs are done: README's start back-off goes up
/// to 60 s after failures in a row.
const QUIESCE_LIMIT: Duration = Duration::from_secs(90);
/// How long a (re)started controller may take to open its session.
const START_LIMIT: Duration = Duration::from_secs(90);
/// The machine's own share of a stop: the signal through box-exec, a loaded 2-core machine. A
/// SIGTERMed controller still running this long after README's stop budget is a failure; one
/// gone after the budget but within it is counted as late in the summary.
const SLACK: Duration = Duration::from_secs(5);
/// After a runner container was killed mid-job, how long the soak waits before it plays
/// GitHub's part and fails the job ("lost communication"; GitHub takes minutes, the fake never).
const CUT_OFF_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub rounds: u64,
    pub from: u64,
    pub sysrunner: PathBuf,
    /// Show an indicatif progress line.
    pub progress: bool,
    /// Start no round after this long (the rounds run so far are reported).
    pub budget: Option<Duration>,
}

/// One job's end.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub kind: ScaleJob,
    pub id: u64,
    pub result: Option<JobResult>,
    pub cut: Cut,
}

/// One round's outcome.
#[derive(Debug, Clone)]
pub struct RoundReport {
    pub plan: RoundPlan,
    pub jobs: Vec<JobOutcome>,
    pub took: Duration,
    pub failures: Vec<String>,
    /// The fault kinds whose rule or action actually fired.
    pub fired: Vec<&'static str>,
    /// The controller's ends in the round: how ("SIGTERM", "SIGKILL", "own") and the code.
    pub exits: Vec<(&'static str, Option<i32>)>,
    /// SIGTERM stops that took longer than README's budget (within [`SLACK`]).
    pub late_stops: Vec<Duration>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub seed: u64,
    pub rounds: Vec<RoundReport>,
    /// Failures of the final SIGTERM and of the checks after it (or of the set-up).
    pub end_failures: Vec<String>,
    pub end_exit: Option<Option<i32>>,
    pub took: Duration,
    pub logs: PathBuf,
    /// How many times the controller was started.
    pub starts: u32,
}

impl Report {
    pub fn failed(&self) -> bool {
        !self.end_failures.is_empty() || self.rounds.iter().any(|r| !r.failures.is_empty())
    }

    /// The replay command of round `round`.
    pub fn replay(seed: u64, round: u64) -> String {
        let alone =
            format!("sysrunner-testkit soak --scale --seed {seed} --from {round} --rounds 1");
        if round == 0 {
            alone
        } else {
            format!(
                "{alone} (with the round before it: --from {} --rounds 2)",
                round - 1
            )
        }
    }

    /// The summary table: faults drawn vs fired, job outcomes by kind, the controller's exits,
    /// failures with their replay command.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scale soak seed {}: {} rounds in {:.0?}, {} failed, controller started {} times (logs: {})",
            self.seed,
            self.rounds.len(),
            self.took,
            self.rounds
                .iter()
                .filter(|r| !r.failures.is_empty())
                .count()
                + usize::from(!self.end_failures.is_empty()),
            self.starts,
            self.logs.display()
        );
        let mut drawn: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for r in &self.rounds {
            for f in &r.plan.faults {
                drawn.entry(f.kind()).or_default().0 += 1;
            }
            for k in &r.fired {
                drawn.entry(k).or_default().1 += 1;
            }
        }
        let _ = writeln!(s, "{:<22} {:>6} {:>6}", "fault", "drawn", "fired");
        for (k, (d, f)) in &drawn {
            let _ = writeln!(s, "{k:<22} {d:>6} {f:>6}");
        }
        let mut outcomes: BTreeMap<(ScaleJob, String), usize> = BTreeMap::new();
        for r in &self.rounds {
            for j in &r.jobs {
                let what = match (j.result, j.cut) {
                    (Some(res), Cut::No) => format!("{res:?}"),
                    (Some(res), Cut::Killed) => format!("{res:?} (killed)"),
                    (None, _) => "not completed".into(),
                };
                *outcomes.entry((j.kind, what)).or_default() += 1;
            }
        }
        let _ = writeln!(s, "{:<8} {:<22} {:>6}", "job", "result", "count");
        for ((k, what), n) in &outcomes {
            let _ = writeln!(s, "{:<8} {what:<22} {n:>6}", k.word());
        }
        let mut exits: BTreeMap<String, usize> = BTreeMap::new();
        for r in &self.rounds {
            for (how, code) in &r.exits {
                *exits
                    .entry(format!(
                        "{how}: {}",
                        code.map_or("killed".into(), |c| c.to_string())
                    ))
                    .or_default() += 1;
            }
        }
        if let Some(code) = self.end_exit {
            *exits
                .entry(format!(
                    "final SIGTERM: {}",
                    code.map_or("none".into(), |c| c.to_string())
                ))
                .or_default() += 1;
        }
        let _ = writeln!(
            s,
            "controller exits: {}",
            if exits.is_empty() {
                "none".into()
            } else {
                exits
                    .iter()
                    .map(|(c, n)| format!("{c} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        let late: Vec<String> = self
            .rounds
            .iter()
            .flat_map(|r| {
                r.late_stops
                    .iter()
                    .map(|d| format!("{:.1}s", d.as_secs_f64()))
            })
            .collect();
        if !late.is_empty() {
            let _ = writeln!(
                s,
                "SIGTERM stops past the {:?} budget but within {SLACK:?} of it: {}",
                table::stop_budget(),
                late.join(", ")
            );
        }
        for r in self.rounds.iter().filter(|r| !r.failures.is_empty()) {
            let _ = writeln!(s, "FAILED seed {} {}", self.seed, r.plan);
            for f in &r.failures {
                let _ = writeln!(s, "  - {f}");
            }
            let _ = writeln!(s, "  replay: {}", Report::replay(self.seed, r.plan.round));
        }
        for f in &self.end_failures {
            let _ = writeln!(s, "FAILED at the end (seed {}): {f}", self.seed);
        }
        s
    }
}

/// A running controller: its process (box-exec, which forwards signals and takes the controller
/// with it when SIGKILLed) and its log.
struct Ctl {
    child: Child,
    log: PathBuf,
}

/// A running container of the set, as `docker ps` shows it.
#[derive(Debug, Clone)]
struct Container {
    id: String,
    running: bool,
    runner_id: Option<u64>,
    runner_name: String,
}

struct Soak {
    s: ScaleRig,
    url: String,
    logs: PathBuf,
    env: BTreeMap<String, String>,
    ctl: Option<Ctl>,
    starts: u32,
    /// Every secret the fake handed out so far, and the request log's last seq read.
    secrets: BTreeSet<String>,
    seq: u64,
}

impl Drop for Soak {
    fn drop(&mut self) {
        if let Some(mut c) = self.ctl.take() {
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
    }
}

impl Soak {
    fn start(sysrunner: &Path, logs: PathBuf) -> Result<Soak, String> {
        let s = ScaleRig::start(FakeConfig::default(), sysrunner)?;
        let url = s.rig.url.clone();
        let env: BTreeMap<String, String> = [
            ("REPO", "octo-org/octo-repo"),
            ("ACCESS_TOKEN", TOKEN),
            ("GITHUB_URL", url.as_str()),
            ("GITHUB_API_URL", url.as_str()),
            ("SCALE_SET_NAME", SET),
            ("SCALE_IMAGE", IMAGE),
            ("SCALE_RUNTIME", "runc"),
            ("SCALE_DOCKER_SOCKET", SOCKET),
            ("SCALE_STATE_DIR", "/var/lib/sysrunner/scale"),
            ("SCALE_MIN_RUNNERS", &table::MIN_RUNNERS.to_string()),
            ("SCALE_MAX_RUNNERS", &table::MAX_RUNNERS.to_string()),
            ("SCALE_LISTEN", LISTEN),
            (
                "DRAIN_TIMEOUT",
                &format!("{}s", table::DRAIN_TIMEOUT.as_secs()),
            ),
            (
                "STOP_TIMEOUT",
                &format!("{}s", table::STOP_TIMEOUT.as_secs()),
            ),
            ("API_TIMEOUT", &format!("{}s", table::API_TIMEOUT.as_secs())),
            (
                "API_DEADLINE",
                &format!("{}s", table::API_DEADLINE.as_secs()),
            ),
            ("LOG_FORMAT", "json"),
            ("NO_COLOR", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Ok(Soak {
            s,
            url,
            logs,
            env,
            ctl: None,
            starts: 0,
            secrets: BTreeSet::from([TOKEN.to_string()]),
            seq: 0,
        })
    }

    /// A control call in the fake's namespace.
    fn ctl_call<T, F>(&self, f: impl FnOnce(ControlClient) -> F) -> Result<T, String>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, ControlError>> + Send + 'static,
    {
        let c = ControlClient::new(&self.url);
        self.s.rig.in_github_netns(f(c)).map_err(|e| e.to_string())
    }

    fn jobs(&self) -> BTreeMap<u64, Job> {
        self.ctl_call(|c| async move { c.jobs().await })
            .map(|v| v.into_iter().map(|j| (j.id, j)).collect())
            .unwrap_or_default()
    }

    /// The set's runners at the fake (named `SCALE_SET_NAME-<8 hex>`).
    fn runners(&self) -> Vec<RunnerState> {
        let prefix = format!("{SET}-");
        self.ctl_call(|c| async move { c.runners().await })
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.name.starts_with(&prefix))
            .collect()
    }

    fn session(&self) -> Option<String> {
        self.ctl_call(|c| async move { c.scale_sets().await })
            .ok()?
            .into_iter()
            .find(|s| s.name == SET)?
            .session
            .map(|s| s.session_id)
    }

    /// The set's containers, running or not.
    fn containers(&self) -> Result<Vec<Container>, String> {
        let out = self.s.try_docker(
            &format!(
                "ps --all --no-trunc --filter label={LABEL_SET}={SET} --format '{{{{.ID}}}} {{{{.State}}}} {{{{.Label \"sysrunner.runner-id\"}}}} {{{{.Label \"sysrunner.runner-name\"}}}}'"
            ),
            &[],
            Duration::from_secs(60),
        )?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let id = w.next()?.to_string();
                let state = w.next().unwrap_or_default();
                Some(Container {
                    id,
                    running: state == "running",
                    runner_id: w.next().and_then(|v| v.parse().ok()),
                    runner_name: w.next().unwrap_or_default().to_string(),
                })
            })
            .collect())
    }

    /// `/healthz` from inside the box: `Ok(body)` for a 2xx, else what wget said.
    fn healthz(&self) -> Result<String, String> {
        let out = self
            .s
            .rig
            .b
            .output(self.s.rig.b.command("/bin/busybox").args([
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{LISTEN}/healthz"),
            ]))
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "wget {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Reads the fake's request log since the last call: every token it handed out is a secret
    /// (JIT configs, registration, admin and queue tokens).
    fn gather_secrets(&mut self) {
        let since = self.seq;
        let Ok(reqs) = self.ctl_call(move |c| async move { c.requests_since(since).await }) else {
            return;
        };
        for r in reqs {
            self.seq = self.seq.max(r.seq);
            if let Some(body) = &r.response_body {
                collect_secrets(body, &mut self.secrets);
            }
        }
    }

    /// The secrets found in `text`, by kind.
    fn leaks(&self, text: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        for s in &self.secrets {
            if text.contains(s.as_str()) {
                out.push(if s == TOKEN {
                    "the PAT"
                } else {
                    "a token or JIT config the fake handed out"
                });
            }
        }
        out.dedup();
        out
    }

    /// Starts the controller and waits until it has opened a session of its own (a new one).
    fn start_controller(&mut self) -> Result<(), String> {
        let before = self.session();
        self.starts += 1;
        let log = self.logs.join(format!("controller-{}.log", self.starts));
        let child = self
            .s
            .rig
            .spawn_in_box(
                &self.s.rig.b.sysrunner_in_box(),
                &["scale"],
                &self.env,
                &log,
            )
            .map_err(|e| format!("spawn sysrunner scale: {e}"))?;
        self.ctl = Some(Ctl { child, log });
        let end = Instant::now() + START_LIMIT;
        while Instant::now() < end {
            if let Some(c) = self.ctl.as_mut()
                && let Ok(Some(st)) = c.child.try_wait()
            {
                let log = c.log.clone();
                self.ctl = None;
                return Err(format!(
                    "the controller exited {st} while starting\n{}",
                    tail(&log)
                ));
            }
            let now = self.session();
            if now.is_some() && now != before {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "the controller opened no session within {START_LIMIT:?}\n{}",
            self.ctl.as_ref().map(|c| tail(&c.log)).unwrap_or_default()
        ))
    }

    /// The controller's own exit, if it ended without the soak: its code.
    fn exited(&mut self) -> Option<Option<i32>> {
        let c = self.ctl.as_mut()?;
        match c.child.try_wait() {
            Ok(Some(st)) => {
                self.ctl = None;
                Some(st.code())
            }
            _ => None,
        }
    }

    /// SIGKILL (box-exec dies and takes the controller with it), waited for.
    fn kill_controller(&mut self) -> bool {
        let Some(mut c) = self.ctl.take() else {
            return false;
        };
        let alive = matches!(c.child.try_wait(), Ok(None));
        let _ = c.child.kill();
        let _ = c.child.wait();
        alive
    }

    /// SIGTERM, then its exit: the code and how long it took (`None`: still running after the
    /// budget and [`SLACK`]; then SIGKILLed).
    fn term_controller(&mut self) -> Option<(Option<i32>, Duration)> {
        let mut c = self.ctl.take()?;
        if !matches!(c.child.try_wait(), Ok(None)) {
            return None;
        }
        let t = Instant::now();
        let _ = crate::boxes::signal(c.child.id(), Signal::SIGTERM);
        let limit = table::stop_budget() + SLACK;
        match crate::boxes::wait_within(&mut c.child, limit) {
            Ok(Some(st)) => Some((st.code(), t.elapsed())),
            _ => {
                let _ = c.child.kill();
                let _ = c.child.wait();
                Some((None, t.elapsed()))
            }
        }
    }

    /// The checks after a SIGTERM stop: `code` and `took` against README, nothing of the set
    /// left (but runners whose job the soak has yet to fail: `cut_runners`), no session.
    fn check_after_term(
        &self,
        code: Option<i32>,
        took: Duration,
        cut_runners: &BTreeSet<u64>,
        failures: &mut Vec<String>,
        late: &mut Vec<Duration>,
    ) {
        if code != Some(0) {
            failures.push(format!(
                "after SIGTERM the controller ended with {code:?} after {took:.1?}; README: 0 (a clean stop after SIGTERM) within {:?} ({})",
                table::stop_budget(),
                table::AFTER_SIGTERM
            ));
        } else if took > table::stop_budget() {
            late.push(took);
        }
        match self.containers() {
            Ok(c) if c.is_empty() => {}
            Ok(c) => failures.push(format!(
                "after SIGTERM, containers of the set are left: {:?} ({})",
                c.iter()
                    .map(|c| (short(&c.id), c.running, &c.runner_name))
                    .collect::<Vec<_>>(),
                table::AFTER_SIGTERM
            )),
            Err(e) => failures.push(format!("docker ps: {e}")),
        }
        let left: Vec<_> = self
            .runners()
            .into_iter()
            .filter(|r| !cut_runners.contains(&r.id))
            .collect();
        if !left.is_empty() {
            failures.push(format!(
                "after SIGTERM, runners of the set are still registered: {:?} ({})",
                left.iter()
                    .map(|r| (&r.name, r.id, &r.status, r.busy))
                    .collect::<Vec<_>>(),
                table::AFTER_SIGTERM
            ));
        }
        if let Some(s) = self.session() {
            failures.push(format!(
                "after SIGTERM the session {s} is still there (README: \"Then it deletes its session\")"
            ));
        }
    }

    /// Deletes the set's message session at GitHub with the Actions service's own call, as an
    /// admin would: an admin token from a registration token (the PAT's).
    fn delete_session(&self) -> Result<bool, String> {
        let sets = self.ctl_call(|c| async move { c.scale_sets().await })?;
        let Some(set) = sets.into_iter().find(|s| s.name == SET) else {
            return Ok(false);
        };
        let Some(session) = set.session else {
            return Ok(false);
        };
        let url = self.url.clone();
        let service = set.actions_url.trim_end_matches('/').to_string();
        let id = set.id;
        self.s.rig.in_github_netns(async move {
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(20))
                .build()
                .map_err(|e| e.to_string())?;
            let reg: serde_json::Value = http
                .post(format!(
                    "{url}/repos/octo-org/octo-repo/actions/runners/registration-token"
                ))
                .header("user-agent", "sysrunner-testkit-soak")
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("accept", "application/vnd.github+json")
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            let reg = reg["token"].as_str().ok_or("no registration token")?;
            let admin: serde_json::Value = http
                .post(format!("{url}/actions/runner-registration"))
                .header("user-agent", "sysrunner-testkit-soak")
                .header("authorization", format!("RemoteAuth {reg}"))
                .json(&serde_json::json!({
                    "url": format!("{url}/octo-org/octo-repo"),
                    "runner_event": "register",
                }))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            let admin = admin["token"].as_str().ok_or("no admin token")?;
            let r = http
                .delete(format!(
                    "{service}/_apis/runtime/runnerscalesets/{id}/sessions/{}?api-version=6.0-preview",
                    session.session_id
                ))
                .header("authorization", format!("Bearer {admin}"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            Ok(r.status().as_u16() == 204)
        })
    }

    /// GitHub's part for a job whose runner was killed mid-job: failed, "lost communication"
    /// (the fake's control `runners/{id}/run` completes the job the runner holds). Only while
    /// the runner still holds that job in progress, so no other job is taken by mistake.
    fn fail_cut_off(&self, runner: u64, job: u64) -> bool {
        let holds = self
            .ctl_call(|c| async move { c.runners().await })
            .unwrap_or_default()
            .iter()
            .any(|r| r.id == runner && r.job == Some(job));
        let in_progress = self
            .ctl_call(move |c| async move { c.job(job).await })
            .is_ok_and(|j| j.status == JobStatus::InProgress);
        if !(holds && in_progress) {
            return false;
        }
        let run = RunJob {
            result: JobResult::Failed,
            output: "The self-hosted runner lost communication with the server (the soak plays GitHub's timeout).".into(),
        };
        self.ctl_call(move |c| async move { c.run_job(runner, &run).await })
            .is_ok()
    }
}

/// Every string of at least 8 characters under a key that names a secret, anywhere in `v`.
fn collect_secrets(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    const KEYS: [&str; 5] = [
        "token",
        "encoded_jit_config",
        "encodedJITConfig",
        "messageQueueAccessToken",
        "access_token",
    ];
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if KEYS.contains(&k.as_str())
                    && let Some(s) = x.as_str()
                    && s.len() >= 8
                {
                    out.insert(s.to_string());
                }
                collect_secrets(x, out);
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                collect_secrets(x, out);
            }
        }
        _ => {}
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The last 40 lines of a log.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn rule(f: &ScaleFault) -> Option<FaultRule> {
    let (method, path) = f.endpoint()?.rule();
    let (count, fault) = match *f {
        ScaleFault::Burst5xx { status, count, .. } => {
            (count, fake_github::Fault::ServerError { status })
        }
        ScaleFault::TooMany { retry_after, .. } => (
            1,
            fake_github::Fault::TooManyRequests {
                retry_after_secs: retry_after,
            },
        ),
        ScaleFault::Hang { .. } => (
            1,
            fake_github::Fault::Hang {
                millis: HANG_MILLIS,
            },
        ),
        _ => return None,
    };
    Some(FaultRule {
        method: method.into(),
        path: path.into(),
        count,
        fault,
    })
}

/// A timed action's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Waiting,
    /// A target seen at this moment (a kill waits `after_ms` from it).
    Armed(Instant),
    Done,
}

fn run_round(soak: &mut Soak, plan: &RoundPlan) -> RoundReport {
    let t0 = Instant::now();
    let allowed: Allowed = table::allowed(plan);
    let mut failures = Vec::new();
    let mut fired: Vec<&'static str> = Vec::new();
    let mut exits: Vec<(&'static str, Option<i32>)> = Vec::new();
    let mut late_stops = Vec::new();
    let mut logs: Vec<PathBuf> = Vec::new();

    if soak.ctl.is_none() {
        if let Err(e) = soak.start_controller() {
            failures.push(format!("the controller would not start: {e}"));
        }
    }
    if let Some(c) = &soak.ctl {
        logs.push(c.log.clone());
    }
    let mut rules = Vec::new();
    for f in &plan.faults {
        if let Some(r) = rule(f) {
            let r2 = r.clone();
            match soak.ctl_call(move |c| async move { c.add_fault(&r2).await }) {
                Ok(id) => rules.push((id, r.count, f.kind())),
                Err(e) => failures.push(format!("the kit could not add the fault {f}: {e}")),
            }
        }
    }
    let mut queued: Vec<(u64, ScaleJob)> = Vec::new();
    for (i, kind) in plan.jobs.iter().enumerate() {
        let spec = JobSpec {
            runner_name: String::new(),
            name: format!("r{}-{i}-{}", plan.round, kind.word()),
            steps: kind.steps().iter().map(|s| s.to_string()).collect(),
            scope: None,
            labels: vec![SET.to_string()],
        };
        match soak.ctl_call(move |c| async move { c.queue_job(&spec).await }) {
            Ok(j) => queued.push((j.id, *kind)),
            Err(e) => failures.push(format!("queue a job: {e}")),
        }
    }
    let queued_at = Instant::now();
    let mut steps = vec![Step::Waiting; plan.faults.len()];
    let mut restart_at: Option<Instant> = None;
    // Runners whose container the soak killed, and the round's jobs cut off with them.
    let mut killed: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut cut: BTreeSet<u64> = BTreeSet::new();
    let ids: BTreeSet<u64> = queued.iter().map(|(id, _)| *id).collect();
    let mut done = false;
    while !done {
        if t0.elapsed() > ROUND_LIMIT {
            let jobs = soak.jobs();
            failures.push(format!(
                "the round's jobs did not complete within {ROUND_LIMIT:?}: {:?}",
                ids.iter()
                    .filter_map(|id| jobs.get(id))
                    .filter(|j| j.status != JobStatus::Completed)
                    .map(|j| (j.id, &j.name, j.status, j.runner_id))
                    .collect::<Vec<_>>()
            ));
            break;
        }
        // An exit the soak did not cause.
        if let Some(code) = soak.exited() {
            exits.push(("own", code));
            if !allowed.allows_own_exit(code) {
                failures.push(format!(
                    "the controller exited {code:?} on its own; allowed: {}",
                    allowed.describe_exits()
                ));
            }
            // As compose's `restart: always` would.
            restart_at.get_or_insert(Instant::now());
        }
        if restart_at.is_some_and(|t| Instant::now() >= t) && soak.ctl.is_none() {
            restart_at = None;
            if let Err(e) = soak.start_controller() {
                failures.push(format!("the controller would not start again: {e}"));
            }
            if let Some(c) = &soak.ctl {
                logs.push(c.log.clone());
            }
        }
        let jobs = soak.jobs();
        let since = queued_at.elapsed();
        for (i, f) in plan.faults.iter().enumerate() {
            if steps[i] == Step::Done {
                continue;
            }
            match *f {
                ScaleFault::ControllerKill { at_ms, down_ms } => {
                    if since >= Duration::from_millis(at_ms) {
                        steps[i] = Step::Done;
                        if soak.kill_controller() {
                            fired.push(f.kind());
                            exits.push(("SIGKILL", None));
                        }
                        restart_at = Some(Instant::now() + Duration::from_millis(down_ms));
                    }
                }
                ScaleFault::ControllerTerm { at_ms } => {
                    if since >= Duration::from_millis(at_ms) {
                        steps[i] = Step::Done;
                        if let Some((code, took)) = soak.term_controller() {
                            fired.push(f.kind());
                            exits.push(("SIGTERM", code));
                            soak.check_after_term(
                                code,
                                took,
                                &killed.keys().copied().collect(),
                                &mut failures,
                                &mut late_stops,
                            );
                        }
                        restart_at = Some(Instant::now());
                    }
                }
                ScaleFault::SessionDeleted { at_ms } => {
                    if since >= Duration::from_millis(at_ms) {
                        steps[i] = Step::Done;
                        match soak.delete_session() {
                            Ok(true) => fired.push(f.kind()),
                            Ok(false) => {}
                            Err(e) => {
                                failures.push(format!("the kit could not delete the session: {e}"))
                            }
                        }
                    }
                }
                ScaleFault::KillIdle { after_ms } | ScaleFault::KillBusy { after_ms } => {
                    let busy = matches!(f, ScaleFault::KillBusy { .. });
                    // Targets: the set's running containers whose runner is idle (registered, no
                    // job) or busy with one of the round's jobs.
                    let want = |soak: &Soak| -> Option<(Container, Option<u64>)> {
                        let containers = soak.containers().ok()?;
                        let runners = soak.runners();
                        containers.into_iter().filter(|c| c.running).find_map(|c| {
                            let rid = c.runner_id?;
                            if busy {
                                let j = jobs.values().find(|j| {
                                    ids.contains(&j.id)
                                        && j.runner_id == Some(rid)
                                        && j.status == JobStatus::InProgress
                                })?;
                                Some((c, Some(j.id)))
                            } else {
                                let r = runners.iter().find(|r| r.id == rid)?;
                                (!r.busy && r.job.is_none() && r.status == "online")
                                    .then_some((c, None))
                            }
                        })
                    };
                    match steps[i] {
                        Step::Waiting if want(soak).is_some() => {
                            steps[i] = Step::Armed(Instant::now());
                        }
                        Step::Armed(t) if t.elapsed() >= Duration::from_millis(after_ms) => {
                            if let Some((c, job)) = want(soak) {
                                steps[i] = Step::Done;
                                if soak
                                    .s
                                    .try_docker(
                                        &format!("kill {}", c.id),
                                        &[],
                                        Duration::from_secs(60),
                                    )
                                    .is_ok()
                                {
                                    fired.push(f.kind());
                                    if let Some(rid) = c.runner_id {
                                        killed.insert(rid, Instant::now());
                                    }
                                    if let Some(j) = job {
                                        cut.insert(j);
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
                _ => steps[i] = Step::Done,
            }
        }
        // Jobs whose runner the soak killed: cut off if they ran; GitHub fails them.
        for j in jobs.values().filter(|j| ids.contains(&j.id)) {
            let Some(rid) = j.runner_id else { continue };
            let Some(at) = killed.get(&rid) else { continue };
            if j.status == JobStatus::InProgress {
                cut.insert(j.id);
                if at.elapsed() >= CUT_OFF_AFTER {
                    soak.fail_cut_off(rid, j.id);
                }
            }
        }
        let all_done = ids.iter().all(|id| {
            jobs.get(id)
                .is_some_and(|j| j.status == JobStatus::Completed)
        });
        // Kills wait for a target only while the round's jobs run.
        let pending = plan.faults.iter().zip(&steps).any(|(f, s)| {
            *s != Step::Done
                && !(all_done
                    && matches!(f, ScaleFault::KillIdle { .. } | ScaleFault::KillBusy { .. }))
        });
        done = all_done && !pending && restart_at.is_none() && soak.ctl.is_some();
        if !done {
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    // The outcome of every job against the table.
    let jobs = soak.jobs();
    let mut outcomes = Vec::new();
    for (id, kind) in &queued {
        let j = jobs.get(id);
        let result = j
            .filter(|j| j.status == JobStatus::Completed)
            .and_then(|j| j.result);
        let how = if cut.contains(id) {
            Cut::Killed
        } else {
            Cut::No
        };
        match result {
            Some(r) if allowed.allows_job(*kind, how, r) => {}
            _ => failures.push(format!(
                "job {id} ({}{}) ended {:?} {result:?}: {}; allowed: {}",
                kind.word(),
                if how == Cut::Killed {
                    ", its runner killed mid-job"
                } else {
                    ""
                },
                j.map(|j| j.status),
                j.map(|j| j.output.trim().to_string()).unwrap_or_default(),
                allowed.describe_job(*kind, how)
            )),
        }
        outcomes.push(JobOutcome {
            kind: *kind,
            id: *id,
            result,
            cut: how,
        });
    }

    // Quiesced: the warm pool and nothing else.
    if soak.ctl.is_some() {
        let end = Instant::now() + QUIESCE_LIMIT;
        let mut last = String::new();
        let mut settled = false;
        while Instant::now() < end {
            if let Some(code) = soak.exited() {
                exits.push(("own", code));
                failures.push(format!(
                    "the controller exited {code:?} on its own after the round's jobs; allowed: {}",
                    allowed.describe_exits()
                ));
                break;
            }
            let containers = soak.containers().unwrap_or_default();
            let runners = soak.runners();
            let running: BTreeSet<&str> = containers
                .iter()
                .filter(|c| c.running)
                .map(|c| c.runner_name.as_str())
                .collect();
            let registered: BTreeSet<&str> = runners.iter().map(|r| r.name.as_str()).collect();
            if running.len() == table::MIN_RUNNERS
                && containers.iter().all(|c| c.running)
                && running == registered
                && runners.iter().all(|r| !r.busy)
            {
                settled = true;
                break;
            }
            last = format!(
                "containers {:?}, runners at GitHub {:?}",
                containers
                    .iter()
                    .map(|c| (short(&c.id), c.running, c.runner_name.as_str()))
                    .collect::<Vec<_>>(),
                runners
                    .iter()
                    .map(|r| (r.name.as_str(), r.status.as_str(), r.busy))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        if !settled && soak.ctl.is_some() {
            failures.push(format!(
                "not quiesced within {QUIESCE_LIMIT:?} of the jobs' end ({}): {last}",
                table::QUIESCED
            ));
        }
        if soak.ctl.is_some()
            && let Err(e) = soak.healthz()
        {
            failures.push(format!(
                "/healthz does not answer 200 with the warm pool up (README: 503 only after five start failures in a row; the warm runner's start ended any): {e}"
            ));
        }
    }

    // Faults that fired; none carries over to the next round.
    let left: BTreeMap<u64, u32> = soak
        .ctl_call(|c| async move { c.faults().await })
        .map(|v| v.into_iter().map(|f| (f.id, f.remaining)).collect())
        .unwrap_or_default();
    for (id, count, kind) in &rules {
        if left.get(id).is_none_or(|r| r < count) {
            fired.push(kind);
        }
    }
    let _ = soak.ctl_call(|c| async move { c.clear_faults().await });

    // No secret in the controller's logs or in its containers' logs.
    soak.gather_secrets();
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for what in soak.leaks(&text) {
            failures.push(format!(
                "{what} is in the controller's log {}",
                log.display()
            ));
        }
    }
    for c in soak.containers().unwrap_or_default() {
        let text = soak.s.logs(&c.id);
        for what in soak.leaks(&text) {
            failures.push(format!(
                "{what} is in the log of container {} ({})",
                short(&c.id),
                c.runner_name
            ));
        }
    }
    if !failures.is_empty() {
        failures.push(format!(
            "controller logs: {}",
            logs.iter()
                .map(|l| l.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }

    RoundReport {
        plan: plan.clone(),
        jobs: outcomes,
        took: t0.elapsed(),
        failures,
        fired,
        exits,
        late_stops,
    }
}

/// The final SIGTERM: exit 0 within the budget, nothing of the set left, no session.
fn finish(soak: &mut Soak, report: &mut Report) {
    if soak.ctl.is_none()
        && let Err(e) = soak.start_controller()
    {
        report.end_failures.push(format!(
            "the controller would not start for the final SIGTERM: {e}"
        ));
        return;
    }
    let log = soak.ctl.as_ref().map(|c| c.log.clone());
    let mut late = Vec::new();
    if let Some((code, took)) = soak.term_controller() {
        report.end_exit = Some(code);
        soak.check_after_term(
            code,
            took,
            &BTreeSet::new(),
            &mut report.end_failures,
            &mut late,
        );
        if let Some(last) = report.rounds.last_mut() {
            last.late_stops.extend(late);
        }
    }
    soak.gather_secrets();
    if let Some(log) = log {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for what in soak.leaks(&text) {
            report.end_failures.push(format!(
                "{what} is in the controller's log {}",
                log.display()
            ));
        }
        if !report.end_failures.is_empty() {
            report.end_failures.push(format!("log: {}", log.display()));
        }
    }
}

/// Runs the scale soak: rounds `from..from+rounds` of `seed`, one controller throughout.
pub fn run(o: &Options) -> Result<Report, String> {
    let t0 = Instant::now();
    let logs = tempfile::Builder::new()
        .prefix(&format!("soak-scale-{}-", o.seed))
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let plans: Vec<RoundPlan> = (o.from..o.from + o.rounds)
        .map(|r| scale_plan::plan(o.seed, r))
        .collect();
    let mut soak = Soak::start(&o.sysrunner, logs.clone())?;
    let mut report = Report {
        seed: o.seed,
        logs,
        ..Report::default()
    };
    let bar = if o.progress {
        let b = indicatif::ProgressBar::new(o.rounds);
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
    let mut failed = 0;
    for p in &plans {
        if o.budget.is_some_and(|b| t0.elapsed() > b) {
            let line = format!("budget spent: stopping before round {}", p.round);
            if o.progress {
                bar.println(line);
            } else {
                eprintln!("{line}");
            }
            break;
        }
        bar.set_message(format!("{failed} failed | {p}"));
        let r = run_round(&mut soak, p);
        if !r.failures.is_empty() {
            failed += 1;
            let line = format!(
                "FAILED seed {} {}\n  {}\n  replay: {}",
                o.seed,
                r.plan,
                r.failures.join("\n  "),
                Report::replay(o.seed, p.round)
            );
            // A hidden bar prints nothing.
            if o.progress {
                bar.println(line);
            } else {
                eprintln!("{line}");
            }
        } else if !o.progress {
            eprintln!(
                "ok seed {} {} -> {} in {:.1?}",
                o.seed,
                r.plan,
                r.jobs
                    .iter()
                    .map(|j| format!(
                        "{}:{}{}",
                        j.kind.word(),
                        j.result.map_or("-".into(), |r| format!("{r:?}")),
                        if j.cut == Cut::Killed { "(killed)" } else { "" }
                    ))
                    .collect::<Vec<_>>()
                    .join(" "),
                r.took
            );
        }
        report.rounds.push(r);
        bar.inc(1);
    }
    bar.finish_and_clear();
    finish(&mut soak, &mut report);
    report.starts = soak.starts;
    report.took = t0.elapsed();
    Ok(report)
}
