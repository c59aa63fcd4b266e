//! `sysrunner scale`'s decisions: how many runners a scale set wants from what its message queue
//! says, and what to do about the runners it has. Pure, so that every rule is a unit test; the
//! controller that carries them out (the scale set session through [`crate::scaleset`], one
//! container per runner through the Docker Engine API) is built on them. Knows nothing of HTTP,
//! Docker or the clock.

pub mod controller;
pub mod docker;
pub mod metrics;
pub mod spec;

/// SCALE_MIN_RUNNERS and SCALE_MAX_RUNNERS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub min: u32,
    pub max: u32,
}

/// The runners a controller has, by what they are doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pool {
    /// JIT config made, container created or starting, not yet listening.
    pub starting: u32,
    /// Listening, no job.
    pub idle: u32,
    /// Running a job.
    pub busy: u32,
}

impl Pool {
    pub fn total(&self) -> u32 {
        self.starting + self.idle + self.busy
    }
}

/// What the controller does next about its runners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Make this many runners (a JIT config and a container each).
    Start(u32),
    /// Remove this many idle runners (at GitHub, then their containers).
    RemoveIdle(u32),
    Keep,
}

/// The runners a scale set wants: one for every job GitHub assigned to it (waiting or running,
/// the statistics' `totalAssignedJobs`) on top of the warm pool, within the limits, as
/// actions-runner-controller and GitHub's Docker example compute it.
pub fn desired(assigned_jobs: i64, limits: Limits) -> u32 {
    let assigned = u32::try_from(assigned_jobs.max(0)).unwrap_or(u32::MAX);
    limits.min.saturating_add(assigned).min(limits.max)
}

/// What to do to go from `pool` to `desired`. Only idle runners are ever removed (a busy one
/// finishes its job; a starting one may already have one). `refused`: GitHub refused the image's
/// runner version (a runner exited 7), so nothing new is started until the image is updated.
pub fn change(desired: u32, pool: Pool, refused: bool) -> Change {
    let have = pool.total();
    if have < desired {
        if refused {
            Change::Keep
        } else {
            Change::Start(desired - have)
        }
    } else if have > desired && pool.idle > 0 {
        Change::RemoveIdle((have - desired).min(pool.idle))
    } else {
        Change::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits { min: 0, max: 8 };

    fn pool(starting: u32, idle: u32, busy: u32) -> Pool {
        Pool {
            starting,
            idle,
            busy,
        }
    }

    #[test]
    fn one_runner_per_assigned_job_on_top_of_the_warm_pool_within_the_limits() {
        assert_eq!(desired(0, L), 0, "scale to zero");
        assert_eq!(desired(3, L), 3);
        assert_eq!(desired(20, L), 8, "never above the maximum");
        assert_eq!(desired(0, Limits { min: 1, max: 8 }), 1, "one kept warm");
        assert_eq!(desired(2, Limits { min: 1, max: 8 }), 3);
        assert_eq!(desired(-4, L), 0, "a negative count is none");
        assert_eq!(desired(i64::MAX, Limits { min: 2, max: 5 }), 5);
        assert_eq!(
            desired(1, Limits { min: 3, max: 2 }),
            2,
            "min above max: max"
        );
    }

    #[test]
    fn runners_are_started_up_to_what_is_wanted() {
        assert_eq!(change(3, pool(0, 0, 0), false), Change::Start(3));
        assert_eq!(change(3, pool(1, 0, 1), false), Change::Start(1));
        assert_eq!(change(3, pool(1, 1, 1), false), Change::Keep);
    }

    #[test]
    fn only_idle_runners_are_removed_and_never_more_than_are_too_many() {
        assert_eq!(change(1, pool(0, 3, 0), false), Change::RemoveIdle(2));
        assert_eq!(change(0, pool(0, 1, 2), false), Change::RemoveIdle(1));
        assert_eq!(
            change(0, pool(2, 0, 2), false),
            Change::Keep,
            "busy and starting stay"
        );
        assert_eq!(change(1, pool(1, 2, 0), false), Change::RemoveIdle(2));
    }

    #[test]
    fn a_refused_runner_version_stops_scaling_up_but_not_down() {
        assert_eq!(change(3, pool(0, 0, 0), true), Change::Keep);
        assert_eq!(change(0, pool(0, 2, 0), true), Change::RemoveIdle(2));
    }
}
