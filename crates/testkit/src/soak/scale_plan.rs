//! What a round of the scale soak does, drawn from the seed and the round's number alone: round K
//! of seed S is the same whether the soak starts at 0 or at K (`--from K`), with the same
//! seeded-RNG approach as [`super::plan`].

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fmt;

/// A job of a round, queued for the scale set's labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScaleJob {
    /// `echo`, done at once.
    Short,
    /// A step that exits 3.
    Failing,
    /// A few seconds of `sleep`: long enough for a kill or a drain to find it busy.
    Long,
}

impl ScaleJob {
    pub fn steps(self) -> &'static [&'static str] {
        match self {
            ScaleJob::Short => &["echo scale-soak-short"],
            ScaleJob::Failing => &["echo scale-soak-failing", "exit 3"],
            ScaleJob::Long => &["sleep 5", "echo scale-soak-long"],
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            ScaleJob::Short => "short",
            ScaleJob::Failing => "failing",
            ScaleJob::Long => "long",
        }
    }
}

/// A scale set endpoint an API fault is aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    /// `POST …/runnerscalesets/{id}/generatejitconfig`.
    JitConfig,
    /// `GET <messageQueueUrl>`: the long poll.
    MessagePoll,
    /// `POST …/runnerscalesets/{id}/acquirejobs`.
    AcquireJobs,
    /// `POST …/runnerscalesets/{id}/sessions`: only called at a start or after a lost session.
    SessionCreate,
}

impl Endpoint {
    /// The fake's fault rule's method and path pattern for it.
    pub fn rule(self) -> (&'static str, &'static str) {
        match self {
            Endpoint::JitConfig => ("POST", "*/generatejitconfig*"),
            Endpoint::MessagePoll => ("GET", "*/messages*"),
            Endpoint::AcquireJobs => ("POST", "*/acquirejobs*"),
            Endpoint::SessionCreate => ("POST", "*/runnerscalesets/*/sessions"),
        }
    }
}

/// One fault of a round. Times are from the round's jobs being queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleFault {
    /// `count` 5xx answers in a row.
    Burst5xx {
        at: Endpoint,
        status: u16,
        count: u32,
    },
    /// 429 with `retry-after`.
    TooMany { at: Endpoint, retry_after: u64 },
    /// The connection held past API_TIMEOUT, then closed without an answer.
    Hang { at: Endpoint },
    /// `docker kill` of a runner container whose runner is idle (not busy at the fake), once one
    /// is there, `after_ms` later.
    KillIdle { after_ms: u64 },
    /// `docker kill` of the container of a runner busy with one of the round's jobs, once one is
    /// busy, `after_ms` later.
    KillBusy { after_ms: u64 },
    /// The controller SIGKILLed at `at_ms`, started again `down_ms` later.
    ControllerKill { at_ms: u64, down_ms: u64 },
    /// The controller SIGTERMed at `at_ms` (it drains), started again once it has exited.
    ControllerTerm { at_ms: u64 },
    /// The controller's message session deleted at GitHub at `at_ms` (the Actions service's own
    /// `DELETE …/sessions/{id}`, as an admin would: the fake has no control for it).
    SessionDeleted { at_ms: u64 },
}

impl ScaleFault {
    /// The fault's kind, for the summary's counts.
    pub fn kind(&self) -> &'static str {
        match self {
            ScaleFault::Burst5xx { at, .. } => match at {
                Endpoint::JitConfig => "5xx jit-config",
                Endpoint::MessagePoll => "5xx message-poll",
                Endpoint::AcquireJobs => "5xx acquire-jobs",
                Endpoint::SessionCreate => "5xx session-create",
            },
            ScaleFault::TooMany { at, .. } => match at {
                Endpoint::JitConfig => "429 jit-config",
                Endpoint::MessagePoll => "429 message-poll",
                Endpoint::AcquireJobs => "429 acquire-jobs",
                Endpoint::SessionCreate => "429 session-create",
            },
            ScaleFault::Hang { at } => match at {
                Endpoint::JitConfig => "hang jit-config",
                Endpoint::MessagePoll => "hang message-poll",
                Endpoint::AcquireJobs => "hang acquire-jobs",
                Endpoint::SessionCreate => "hang session-create",
            },
            ScaleFault::KillIdle { .. } => "runner killed idle",
            ScaleFault::KillBusy { .. } => "runner killed busy",
            ScaleFault::ControllerKill { .. } => "controller SIGKILL",
            ScaleFault::ControllerTerm { .. } => "controller SIGTERM",
            ScaleFault::SessionDeleted { .. } => "session deleted",
        }
    }

    pub fn endpoint(&self) -> Option<Endpoint> {
        match *self {
            ScaleFault::Burst5xx { at, .. }
            | ScaleFault::TooMany { at, .. }
            | ScaleFault::Hang { at } => Some(at),
            _ => None,
        }
    }

    /// Two faults of one class in a round would race for one target.
    fn class(&self) -> u8 {
        match self {
            ScaleFault::Burst5xx { .. } | ScaleFault::TooMany { .. } | ScaleFault::Hang { .. } => 0,
            ScaleFault::KillIdle { .. } | ScaleFault::KillBusy { .. } => 1,
            ScaleFault::ControllerKill { .. } | ScaleFault::ControllerTerm { .. } => 2,
            ScaleFault::SessionDeleted { .. } => 3,
        }
    }
}

impl fmt::Display for ScaleFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaleFault::Burst5xx { at, status, count } => write!(f, "{count}x{status} on {at:?}"),
            ScaleFault::TooMany { at, retry_after } => {
                write!(f, "429 (retry-after {retry_after}s) on {at:?}")
            }
            ScaleFault::Hang { at } => write!(f, "hang on {at:?}"),
            ScaleFault::KillIdle { after_ms } => {
                write!(f, "an idle runner's container killed (+{after_ms}ms)")
            }
            ScaleFault::KillBusy { after_ms } => {
                write!(f, "a busy runner's container killed (busy+{after_ms}ms)")
            }
            ScaleFault::ControllerKill { at_ms, down_ms } => write!(
                f,
                "controller SIGKILLed at +{at_ms}ms, restarted {down_ms}ms later"
            ),
            ScaleFault::ControllerTerm { at_ms } => {
                write!(f, "controller SIGTERMed at +{at_ms}ms, restarted")
            }
            ScaleFault::SessionDeleted { at_ms } => {
                write!(f, "message session deleted at +{at_ms}ms")
            }
        }
    }
}

/// One round, as drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundPlan {
    pub seed: u64,
    pub round: u64,
    pub jobs: Vec<ScaleJob>,
    pub faults: Vec<ScaleFault>,
}

impl fmt::Display for RoundPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let jobs: Vec<&str> = self.jobs.iter().map(|j| j.word()).collect();
        let faults: Vec<String> = self.faults.iter().map(|x| x.to_string()).collect();
        write!(
            f,
            "round {} (jobs {}): {}",
            self.round,
            jobs.join(","),
            if faults.is_empty() {
                "no fault".to_string()
            } else {
                faults.join(", ")
            }
        )
    }
}

/// The seed of one round's generator: the soak's seed mixed with the round's number (as
/// [`super::plan::life_seed`], with a constant of its own so that round K is not life K).
pub fn round_seed(seed: u64, round: u64) -> u64 {
    super::plan::life_seed(seed, round) ^ 0x5CA1_E500_5CA1_E500
}

fn endpoint(rng: &mut StdRng) -> Endpoint {
    match rng.random_range(0..7) {
        0 | 1 => Endpoint::JitConfig,
        2 | 3 => Endpoint::MessagePoll,
        4 | 5 => Endpoint::AcquireJobs,
        _ => Endpoint::SessionCreate,
    }
}

/// Round `round` of the scale soak seeded with `seed`.
pub fn plan(seed: u64, round: u64) -> RoundPlan {
    let mut rng = StdRng::seed_from_u64(round_seed(seed, round));
    let n_jobs = rng.random_range(1..=4);
    let mut jobs: Vec<ScaleJob> = (0..n_jobs)
        .map(|_| match rng.random_range(0..3) {
            0 => ScaleJob::Short,
            1 => ScaleJob::Failing,
            _ => ScaleJob::Long,
        })
        .collect();
    let n = rng.random_range(0..=2);
    let mut faults: Vec<ScaleFault> = Vec::new();
    while faults.len() < n {
        let f = match rng.random_range(0..8) {
            0 => ScaleFault::Burst5xx {
                at: endpoint(&mut rng),
                status: [500, 502, 503][rng.random_range(0..3)],
                count: rng.random_range(1..=3),
            },
            1 => ScaleFault::TooMany {
                at: endpoint(&mut rng),
                retry_after: rng.random_range(1..=2),
            },
            2 => ScaleFault::Hang {
                at: endpoint(&mut rng),
            },
            3 => ScaleFault::KillIdle {
                after_ms: rng.random_range(0..1_500),
            },
            4 => ScaleFault::KillBusy {
                after_ms: rng.random_range(0..2_000),
            },
            5 => ScaleFault::ControllerKill {
                at_ms: rng.random_range(0..4_000),
                down_ms: rng.random_range(0..2_000),
            },
            6 => ScaleFault::ControllerTerm {
                at_ms: rng.random_range(0..4_000),
            },
            _ => ScaleFault::SessionDeleted {
                at_ms: rng.random_range(0..4_000),
            },
        };
        // One fault per class: the fake's rules match in order, and a kill or a signal takes
        // one target.
        if !faults.iter().any(|g| g.class() == f.class()) {
            faults.push(f);
        }
    }
    // A busy kill needs a job that stays busy long enough to be found.
    if faults
        .iter()
        .any(|f| matches!(f, ScaleFault::KillBusy { .. }))
        && !jobs.contains(&ScaleJob::Long)
    {
        jobs[0] = ScaleJob::Long;
    }
    RoundPlan {
        seed,
        round,
        jobs,
        faults,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_is_the_same_drawn_alone_and_seeds_differ() {
        for round in 0..50 {
            assert_eq!(plan(7, round), plan(7, round));
        }
        assert_ne!(
            (0..20).map(|r| plan(1, r)).collect::<Vec<_>>(),
            (0..20).map(|r| plan(2, r)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn every_kind_is_drawn_within_the_bounds() {
        let mut kinds = std::collections::BTreeSet::new();
        let mut jobs = std::collections::BTreeSet::new();
        for round in 0..600 {
            let p = plan(1, round);
            assert!((1..=4).contains(&p.jobs.len()), "{p}");
            assert!(p.faults.len() <= 2, "{p}");
            let classes: Vec<u8> = p.faults.iter().map(|f| f.class()).collect();
            let mut dedup = classes.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(classes.len(), dedup.len(), "{p}");
            if p.faults
                .iter()
                .any(|f| matches!(f, ScaleFault::KillBusy { .. }))
            {
                assert!(p.jobs.contains(&ScaleJob::Long), "{p}");
            }
            kinds.extend(p.faults.iter().map(|f| f.kind()));
            jobs.extend(p.jobs.iter().copied());
        }
        // 3 API faults × 4 endpoints, two kills, two signals, the session.
        assert_eq!(kinds.len(), 17, "{kinds:?}");
        assert_eq!(jobs.len(), 3);
    }
}
