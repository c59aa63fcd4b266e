//! What a life may end with, fault by fault, written from README's contract ("Exit codes", "One
//! life of a runner container": listener exit codes, Stopping, the retries within API_DEADLINE),
//! never from sysrunner's lifecycle code: the soak must be able to catch that code's mistakes.
//! Where timing makes two outcomes legitimate, both are allowed, each with its reason.

use super::plan::{ApiTarget, Fault, JobKind, LifePlan};
use crate::fake_github::JobResult;
use std::collections::BTreeMap;

/// A job's end as the fake saw it: `None` when no runner ever took it (queued or assigned).
pub type JobEnd = Option<JobResult>;

/// The outcomes a life may have, each with why.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    /// Exit codes of `sysrunner run` (`None`: killed, no code).
    pub exits: BTreeMap<Option<i32>, Vec<&'static str>>,
    /// The job's result.
    pub jobs: Vec<(JobEnd, &'static str)>,
    /// Why a registration may outlive the life (to be deleted by the next one), if it may.
    pub leftover: Option<&'static str>,
}

impl Allowed {
    fn exit(&mut self, code: impl Into<Option<i32>>, why: &'static str) {
        self.exits.entry(code.into()).or_default().push(why);
    }

    fn job(&mut self, end: JobEnd, why: &'static str) {
        if !self.jobs.iter().any(|(e, _)| *e == end) {
            self.jobs.push((end, why));
        }
    }

    pub fn allows_exit(&self, code: Option<i32>) -> bool {
        self.exits.contains_key(&code)
    }

    pub fn allows_job(&self, end: JobEnd) -> bool {
        self.jobs.iter().any(|(e, _)| *e == end)
    }

    /// For a failure message: every allowed outcome with its reasons.
    pub fn describe(&self) -> String {
        let exits: Vec<String> = self
            .exits
            .iter()
            .map(|(c, why)| match c {
                Some(c) => format!("{c} ({})", why.join("; ")),
                None => format!("killed ({})", why.join("; ")),
            })
            .collect();
        let jobs: Vec<String> = self
            .jobs
            .iter()
            .map(|(e, why)| format!("{e:?} ({why})"))
            .collect();
        format!("exits: {}; job: {}", exits.join(", "), jobs.join(", "))
    }
}

/// What the job's own steps make of it when it runs to its end.
pub fn natural_result(job: JobKind) -> JobResult {
    match job {
        JobKind::Failing => JobResult::Failed,
        _ => JobResult::Succeeded,
    }
}

/// The table. Settings of every life: DRAIN_TIMEOUT 0 (the default), STOP_TIMEOUT 9s,
/// API_TIMEOUT 5s, API_DEADLINE 30s (`Rig::settings`).
pub fn allowed(plan: &LifePlan) -> Allowed {
    let mut a = Allowed::default();
    let natural = Some(natural_result(plan.job));
    let crash = plan
        .faults
        .iter()
        .any(|f| matches!(f, Fault::ListenerExit { code } if ![0, 2, 3, 4, 5].contains(code)));
    let duplicate = plan
        .faults
        .iter()
        .any(|f| matches!(f, Fault::Leftover { online: true }));
    if duplicate {
        // Registration: "an online one is a duplicate (exit 77)"; the listener never starts.
        a.exit(77, "a live runner already has this name (exit codes: 77)");
        a.job(
            None,
            "the runner never registered: a live duplicate has its name",
        );
    } else if crash {
        // "anything else exits 75" (listener exit codes); the fake listener exits instead of
        // taking the job.
        a.exit(75, "the listener crashed: any code but 0, 2-5, 7 exits 75");
        a.job(None, "the listener crashed before it took the job");
    } else {
        a.exit(0, "the runner ran a job (exit codes: 0)");
        a.job(natural, "the job ran to its end");
    }
    for f in &plan.faults {
        match *f {
            // Retried within API_DEADLINE (30 s): 3 5xx, a 429 or secondary limit of 1-2 s, one
            // hang of API_TIMEOUT, one dropped answer (its retry meets a 409 from the runner the
            // first call made: "a 409 is resolved once") all fit. Nothing changes.
            Fault::Burst5xx { .. }
            | Fault::TooMany { .. }
            | Fault::Secondary { .. }
            | Fault::Hang { .. }
            | Fault::Drop { .. } => {
                if f.target() == Some(ApiTarget::Delete)
                    && plan
                        .faults
                        .iter()
                        .any(|g| matches!(g, Fault::Signal { .. }))
                {
                    // Stopping: deregistering must fit STOP_TIMEOUT; "what could not be deleted is
                    // recorded for the next life".
                    a.leftover = Some(
                        "a deregistration slowed by a fault may not fit STOP_TIMEOUT after a signal: recorded for the next life",
                    );
                }
            }
            // "2 and 5 restart the listener; 3 and 4 wait for update.finished and start again":
            // nothing changes. Any other code is the crash handled above.
            Fault::ListenerExit { .. } => {}
            // Stopping: SIGTERM/SIGINT exits 0 ("a clean stop"); idle: deregistered first, so no
            // job; busy with DRAIN_TIMEOUT 0: the job is cancelled. Timing decides which.
            Fault::Signal { .. } => {
                a.exit(0, "a clean stop after SIGTERM/SIGINT (exit codes: 0)");
                a.job(None, "the signal came before the runner took the job");
                a.job(
                    Some(JobResult::Canceled),
                    "the signal came while busy; DRAIN_TIMEOUT 0 cancels",
                );
                a.job(natural, "the signal came after the job had ended");
            }
            // "dockerd dying mid-job stops the runner and exits 75"; before the job, "dockerd did
            // not start" or a runner without its dockerd: 75 too. After the job: nothing to stop.
            Fault::KillDockerd { .. } => {
                a.exit(75, "dockerd died during the life (exit codes: 75)");
                a.job(None, "dockerd died before the job was taken");
                a.job(
                    Some(JobResult::Canceled),
                    "dockerd died mid-job: the runner is stopped",
                );
                a.job(
                    Some(JobResult::Failed),
                    "dockerd died mid-job: a docker step fails before the stop",
                );
                if !crash && !duplicate {
                    a.exit(0, "dockerd was killed after the life's end, or not yet started (the kill found none)");
                }
            }
            // "A 409 (the name is taken) is resolved once: an offline runner of that name ... is
            // deleted and the call repeated" (config.sh --replace takes the name too). Both
            // happen when the life registers (jit) or its runner is configured (config): a life
            // that dockerd's death or a signal ends before then leaves it to the next life.
            Fault::Leftover { online: false } => {
                if plan
                    .faults
                    .iter()
                    .any(|g| matches!(g, Fault::KillDockerd { .. } | Fault::Signal { .. }))
                {
                    a.leftover = Some(
                        "an offline runner of the name is taken over when the life registers or configures its runner; a life ended before (dockerd died, a signal) leaves it to the next",
                    );
                }
            }
            Fault::Leftover { online: true } => {}
            // A container's death: no code, no time to deregister; "a runner an earlier life left
            // registered is deleted" by the next life.
            Fault::BoxKill { .. } => {
                a.exit(None, "the box was SIGKILLed: no exit code");
                a.job(
                    None,
                    "the box died before the job ended (it stays in progress)",
                );
                a.job(natural, "the box died after the job had ended");
                a.leftover = Some("SIGKILL leaves no time to deregister: the next life deletes it");
            }
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::super::plan::{Registration, Sig, SoakBox};
    use super::*;

    fn life(job: JobKind, faults: Vec<Fault>) -> LifePlan {
        LifePlan {
            seed: 1,
            life: 0,
            boxed: SoakBox::Sysbox,
            registration: Registration::Jit,
            job,
            faults,
        }
    }

    #[test]
    fn no_fault_is_exit_0_and_the_jobs_own_result() {
        let a = allowed(&life(JobKind::Failing, vec![]));
        assert!(a.allows_exit(Some(0)) && !a.allows_exit(Some(75)) && !a.allows_exit(None));
        assert!(a.allows_job(Some(JobResult::Failed)));
        assert!(!a.allows_job(Some(JobResult::Succeeded)) && !a.allows_job(None));
        assert!(a.leftover.is_none());
    }

    #[test]
    fn a_live_duplicate_is_77_and_an_offline_leftover_changes_nothing() {
        let a = allowed(&life(
            JobKind::Short,
            vec![Fault::Leftover { online: true }],
        ));
        assert_eq!(a.exits.keys().copied().collect::<Vec<_>>(), vec![Some(77)]);
        assert!(a.allows_job(None) && !a.allows_job(Some(JobResult::Succeeded)));
        let a = allowed(&life(
            JobKind::Short,
            vec![Fault::Leftover { online: false }],
        ));
        assert_eq!(a.exits.keys().copied().collect::<Vec<_>>(), vec![Some(0)]);
        assert!(a.allows_job(Some(JobResult::Succeeded)));
    }

    /// Seed 20261203, life 273: config mode, an offline runner of the name, dockerd killed before
    /// the runner was configured: exit 75 and the offline runner still there, for the next life.
    #[test]
    fn an_offline_leftover_may_outlive_a_life_that_ends_before_it_registers() {
        let a = allowed(&life(
            JobKind::Long,
            vec![
                Fault::Leftover { online: false },
                Fault::KillDockerd {
                    at: super::super::plan::Moment::Start(412),
                },
            ],
        ));
        assert!(a.allows_exit(Some(75)) && a.allows_job(None));
        assert!(a.leftover.is_some());
        // Alone, it is taken over: nothing may be left.
        let a = allowed(&life(
            JobKind::Long,
            vec![Fault::Leftover { online: false }],
        ));
        assert!(a.leftover.is_none());
    }

    #[test]
    fn a_box_sigkill_has_no_code_and_may_leave_its_registration() {
        let a = allowed(&life(
            JobKind::Long,
            vec![Fault::BoxKill {
                at: super::super::plan::Moment::Busy(0),
            }],
        ));
        assert!(a.allows_exit(None) && a.allows_job(None));
        assert!(a.leftover.is_some());
    }

    #[test]
    fn api_faults_are_retried_and_change_nothing() {
        let a = allowed(&life(
            JobKind::Short,
            vec![
                Fault::Hang {
                    target: ApiTarget::Register,
                },
                Fault::Drop {
                    target: ApiTarget::Delete,
                },
            ],
        ));
        assert_eq!(a.exits.keys().copied().collect::<Vec<_>>(), vec![Some(0)]);
        assert_eq!(a.jobs.len(), 1);
        assert!(a.leftover.is_none());
    }

    #[test]
    fn a_crash_is_75_unless_a_signal_came_first() {
        let crash = Fault::ListenerExit { code: 1 };
        let a = allowed(&life(JobKind::Short, vec![crash]));
        assert_eq!(a.exits.keys().copied().collect::<Vec<_>>(), vec![Some(75)]);
        assert!(a.allows_job(None) && !a.allows_job(Some(JobResult::Succeeded)));
        let sig = Fault::Signal {
            sig: Sig::Term,
            at: super::super::plan::Moment::Start(10),
            again_ms: None,
        };
        let a = allowed(&life(JobKind::Short, vec![crash, sig]));
        assert_eq!(
            a.exits.keys().copied().collect::<Vec<_>>(),
            vec![Some(0), Some(75)]
        );
        assert!(a.allows_job(Some(JobResult::Canceled)));
        for code in [2, 3, 5] {
            let a = allowed(&life(JobKind::Long, vec![Fault::ListenerExit { code }]));
            assert_eq!(a.exits.keys().copied().collect::<Vec<_>>(), vec![Some(0)]);
            assert!(a.allows_job(Some(JobResult::Succeeded)));
        }
    }

    #[test]
    fn every_entry_says_why() {
        for l in 0..200 {
            let a = allowed(&super::super::plan::plan(
                5,
                l,
                super::super::BoxChoice::Both,
            ));
            assert!(!a.exits.is_empty() && !a.jobs.is_empty());
            assert!(a.exits.values().flatten().all(|w| !w.is_empty()));
            assert!(a.jobs.iter().all(|(_, w)| !w.is_empty()));
        }
    }
}
