//! What a round of the scale soak may end with, fault by fault, written from README's contract
//! for `sysrunner scale` ("What the controller does": number of runners, container exits, faults,
//! at start, on SIGTERM, metrics and health; "Exit codes"), never from `src/scale`: the soak must
//! be able to catch that code's mistakes. Where timing makes two outcomes legitimate, both are
//! allowed, each with its reason.

use super::scale_plan::{RoundPlan, ScaleFault, ScaleJob};
use crate::fake_github::JobResult;
use std::collections::BTreeMap;
use std::time::Duration;

/// The controller's settings in the soak (README's names).
pub const MIN_RUNNERS: usize = 1;
pub const MAX_RUNNERS: usize = 3;
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(9);
pub const API_TIMEOUT: Duration = Duration::from_secs(5);
pub const API_DEADLINE: Duration = Duration::from_secs(30);

/// README: "Keep compose's `stop_grace_period` at `DRAIN_TIMEOUT` + `STOP_TIMEOUT` + 1 s": the
/// time a SIGTERMed controller has to be gone.
pub fn stop_budget() -> Duration {
    DRAIN_TIMEOUT + STOP_TIMEOUT + Duration::from_secs(1)
}

/// How a job of the round came to its end, as the harness saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Nothing the soak did touched its runner.
    No,
    /// The soak `docker kill`ed its runner's container while the job ran: the job was left in
    /// progress, and the soak failed it as GitHub does a job whose runner lost communication.
    Killed,
}

/// The outcomes a round may have, each with why.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    /// Results a job may end with, by how it was cut.
    results: Vec<(Option<ScaleJob>, bool, JobResult, &'static str)>,
    /// Exit codes the controller may end with on its own (no signal from the soak) in the round.
    pub own_exits: BTreeMap<i32, Vec<&'static str>>,
}

impl Allowed {
    fn result(&mut self, job: Option<ScaleJob>, cut: bool, r: JobResult, why: &'static str) {
        self.results.push((job, cut, r, why));
    }

    fn own_exit(&mut self, code: i32, why: &'static str) {
        self.own_exits.entry(code).or_default().push(why);
    }

    /// May a job of kind `job`, cut as `cut`, end with `r`?
    pub fn allows_job(&self, job: ScaleJob, cut: Cut, r: JobResult) -> bool {
        self.results.iter().any(|(j, c, res, _)| {
            j.is_none_or(|j| j == job) && *c == (cut == Cut::Killed) && *res == r
        })
    }

    /// May the controller exit with `code` without a signal from the soak?
    pub fn allows_own_exit(&self, code: Option<i32>) -> bool {
        code.is_some_and(|c| self.own_exits.contains_key(&c))
    }

    /// For a failure message: what a job of kind `job` may end with, and why.
    pub fn describe_job(&self, job: ScaleJob, cut: Cut) -> String {
        let list: Vec<String> = self
            .results
            .iter()
            .filter(|(j, c, _, _)| j.is_none_or(|j| j == job) && *c == (cut == Cut::Killed))
            .map(|(_, _, r, why)| format!("{r:?} ({why})"))
            .collect();
        if list.is_empty() {
            "nothing".into()
        } else {
            list.join(", ")
        }
    }

    pub fn describe_exits(&self) -> String {
        if self.own_exits.is_empty() {
            return "none: no fault of the round lets it exit on its own".into();
        }
        self.own_exits
            .iter()
            .map(|(c, why)| format!("{c} ({})", why.join("; ")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What the job's own steps make of it when it runs to its end.
pub fn natural_result(job: ScaleJob) -> JobResult {
    match job {
        ScaleJob::Failing => JobResult::Failed,
        ScaleJob::Short | ScaleJob::Long => JobResult::Succeeded,
    }
}

/// The table for one round.
pub fn allowed(plan: &RoundPlan) -> Allowed {
    let mut a = Allowed::default();
    for job in [ScaleJob::Short, ScaleJob::Failing, ScaleJob::Long] {
        // "a new runner container for each job GitHub assigns": every queued job runs, whatever
        // else the round does (a fault delays it, the next controller takes it over).
        a.result(
            Some(job),
            false,
            natural_result(job),
            "the job ran to its end in a runner container of its own",
        );
    }
    for f in &plan.faults {
        match *f {
            // "GitHub's 5xx and 429 answers are retried within API_DEADLINE" (30 s): three 5xx,
            // one 429 of 1-2 s, one hang of API_TIMEOUT + 1 s all fit. Nothing changes: no exit,
            // every job its own result. A fault on session creation fires only if the round
            // opens a session (a restart, a lost session).
            ScaleFault::Burst5xx { .. } | ScaleFault::TooMany { .. } | ScaleFault::Hang { .. } => {}
            // "A container that ... exits before any job is counted, and its runner is deleted";
            // the job it might have taken goes to another runner. The kill aims at a runner the
            // fake shows idle, but its job may start between that look and the kill: then it is
            // a busy kill (below).
            ScaleFault::KillIdle { .. } | ScaleFault::KillBusy { .. } => {
                a.result(
                    None,
                    true,
                    JobResult::Failed,
                    "its runner's container was killed mid-job: GitHub fails a job whose runner lost communication (the soak plays that timeout; the fake does not)",
                );
                a.result(
                    None,
                    true,
                    JobResult::Succeeded,
                    "the kill landed as the job completed: its end was already reported",
                );
                a.result(
                    Some(ScaleJob::Failing),
                    true,
                    JobResult::Failed,
                    "the kill landed as the failing job completed",
                );
            }
            // SIGKILL: no drain, no code; the runner containers are the Docker host's, not the
            // controller's children: they run on. "At start. It adopts running containers and
            // removes exited ones", deletes runners no container backs and the session it kept.
            // Every job its own result.
            ScaleFault::ControllerKill { .. } => {}
            // "On SIGTERM: it takes no new jobs and removes idle runners at once. Busy runners get
            // DRAIN_TIMEOUT to finish. After that their containers are all stopped at once, and
            // each runner cancels its job". A job busy for longer than DRAIN_TIMEOUT after the
            // signal is cancelled; one that ends within it, or that was not yet started (the
            // next controller takes it), has its own result.
            ScaleFault::ControllerTerm { .. } => {
                a.result(
                    None,
                    false,
                    JobResult::Canceled,
                    "busy when SIGTERM came and past DRAIN_TIMEOUT (3 s): its runner cancels it",
                );
            }
            // README does not say what the controller does when GitHub drops its message
            // session. Either it opens a new one and goes on, or it exits as for a failure it
            // cannot get past: 75 ("temporary failure worth a restart") or 69 ("GitHub ...
            // failing after every retry"), "without touching its runners: running jobs go on,
            // and the next start adopts their containers" (the soak starts it again, as
            // compose's `restart: always` does). Every job its own result either way.
            ScaleFault::SessionDeleted { .. } => {
                a.own_exit(
                    75,
                    "its session was deleted at GitHub: a temporary failure worth a restart",
                );
                a.own_exit(
                    69,
                    "its session was deleted at GitHub: GitHub failing after every retry",
                );
            }
        }
    }
    a
}

/// What holds once a round has quiesced (every job completed, the controller running), from
/// "Number of runners" and "Container exits": the count it aims for is SCALE_MIN_RUNNERS plus
/// the jobs GitHub has assigned to the set (none left), so exactly [`MIN_RUNNERS`] runner
/// containers, running, no exited one (removed when it exits), and at GitHub exactly their
/// runners (a runner whose container exited before its job is deleted; one whose job ran is
/// ephemeral and gone with its job).
pub const QUIESCED: &str = "SCALE_MIN_RUNNERS (1) running containers of the set, none exited, and exactly their runners registered at GitHub";

/// What holds after a SIGTERM, from "On SIGTERM" and "Exit codes": exit 0 ("a clean stop after
/// SIGTERM") within [`stop_budget`]; no runner container of the set left (idle ones removed at
/// once, busy ones stopped after the drain, every exited one removed); no runner of the set at
/// GitHub (idle runners removed at GitHub; a busy one "cancels its job and deregisters"); its
/// session deleted ("Then it deletes its session").
pub const AFTER_SIGTERM: &str = "exit 0 within DRAIN_TIMEOUT + STOP_TIMEOUT + 1 s (13 s), no container of the set, no runner of the set at GitHub, no session";

#[cfg(test)]
mod tests {
    use super::super::scale_plan::{Endpoint, plan};
    use super::*;

    fn round(jobs: Vec<ScaleJob>, faults: Vec<ScaleFault>) -> RoundPlan {
        RoundPlan {
            seed: 1,
            round: 0,
            jobs,
            faults,
        }
    }

    #[test]
    fn no_fault_is_each_jobs_own_result_and_no_exit() {
        let a = allowed(&round(vec![ScaleJob::Failing], vec![]));
        assert!(a.allows_job(ScaleJob::Failing, Cut::No, JobResult::Failed));
        assert!(a.allows_job(ScaleJob::Short, Cut::No, JobResult::Succeeded));
        assert!(!a.allows_job(ScaleJob::Short, Cut::No, JobResult::Failed));
        assert!(!a.allows_job(ScaleJob::Long, Cut::No, JobResult::Canceled));
        assert!(!a.allows_job(ScaleJob::Long, Cut::Killed, JobResult::Failed));
        assert!(!a.allows_own_exit(Some(75)) && !a.allows_own_exit(None));
    }

    #[test]
    fn api_faults_and_a_controller_kill_change_nothing() {
        let a = allowed(&round(
            vec![ScaleJob::Long],
            vec![
                ScaleFault::Hang {
                    at: Endpoint::AcquireJobs,
                },
                ScaleFault::ControllerKill {
                    at_ms: 10,
                    down_ms: 10,
                },
            ],
        ));
        assert!(a.allows_job(ScaleJob::Long, Cut::No, JobResult::Succeeded));
        assert!(!a.allows_job(ScaleJob::Long, Cut::No, JobResult::Canceled));
        assert!(!a.allows_job(ScaleJob::Long, Cut::No, JobResult::Failed));
        assert!(a.own_exits.is_empty());
    }

    #[test]
    fn a_sigterm_may_cancel_a_busy_job_and_a_kill_may_fail_it() {
        let a = allowed(&round(
            vec![ScaleJob::Long],
            vec![ScaleFault::ControllerTerm { at_ms: 0 }],
        ));
        assert!(a.allows_job(ScaleJob::Long, Cut::No, JobResult::Canceled));
        assert!(a.allows_job(ScaleJob::Long, Cut::No, JobResult::Succeeded));
        assert!(!a.allows_job(ScaleJob::Long, Cut::No, JobResult::Failed));
        let a = allowed(&round(
            vec![ScaleJob::Long],
            vec![ScaleFault::KillBusy { after_ms: 0 }],
        ));
        assert!(a.allows_job(ScaleJob::Long, Cut::Killed, JobResult::Failed));
        assert!(!a.allows_job(ScaleJob::Long, Cut::Killed, JobResult::Canceled));
        assert!(!a.allows_job(ScaleJob::Short, Cut::No, JobResult::Failed));
    }

    #[test]
    fn only_a_lost_session_lets_the_controller_exit_on_its_own() {
        let a = allowed(&round(
            vec![ScaleJob::Short],
            vec![ScaleFault::SessionDeleted { at_ms: 0 }],
        ));
        assert!(a.allows_own_exit(Some(75)) && a.allows_own_exit(Some(69)));
        assert!(!a.allows_own_exit(Some(77)) && !a.allows_own_exit(Some(0)));
    }

    #[test]
    fn every_entry_says_why() {
        for r in 0..200 {
            let a = allowed(&plan(5, r));
            assert!(a.results.iter().all(|(_, _, _, w)| !w.is_empty()));
            assert!(a.own_exits.values().flatten().all(|w| !w.is_empty()));
        }
    }
}
