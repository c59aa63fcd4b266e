//! What to do when `bin/Runner.Listener` exits, by its exit code, and why a life ends with it
//! ([`Failure`]). Pure; which exit code a failure becomes is `crate::exit`'s.
//!
//! actions/runner's codes (its `Constants.Runner.ReturnCode`): 0 done or cancelled, 1 terminated
//! with an error, 2 retryable, 3 updating, 4 updating in ephemeral mode, 5 session conflict,
//! 6 configuration refreshed, 7 version deprecated. The listener returns 7 only when its
//! environment has `ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1` (else it says 1), and
//! actions/runner's `run-helper.sh` passes 7 on as its own exit code under the same condition,
//! which actions-runner-controller relies on.

use std::time::Duration;

/// How many times a retryable exit (2, 5) restarts the listener in one life.
pub const MAX_RESTARTS: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterExit {
    /// 0: the job is done (or cancelled): deregister and exit 0.
    Done,
    /// 2 (retryable) or 5 (session conflict): start the listener again after a pause.
    Restart {
        after: Duration,
        reason: &'static str,
    },
    /// 3 or 4: it is updating itself; wait for `update.finished`, then start again.
    AwaitUpdate,
    /// Anything else, or too many restarts: the life ends, and the failure says why.
    Fail(Failure),
}

/// Why the listener's exit ends the life. Apart from a deprecated version the controller asked
/// to hear about, a fresh life may well get further, so each is worth a restart; which exit code
/// each becomes is `crate::exit`'s decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// 2 or 5 again after [`MAX_RESTARTS`] restarts.
    #[error("the listener exited {code} after {MAX_RESTARTS} restarts")]
    TooManyRestarts { code: i32 },
    /// 1: terminated with an error.
    #[error("the listener ended with an error (exit 1)")]
    Error,
    /// 6: the configuration was refreshed; this life's registration is no longer the runner's.
    #[error("the listener's configuration was refreshed (exit 6)")]
    ConfigRefreshed,
    /// 7: GitHub refuses the image's runner. `passed_on`: the container was started with
    /// `ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1`, so the 7 is the container's too;
    /// a restart of the same image cannot help.
    #[error(
        "GitHub refuses this runner version as deprecated (exit 7): rebuild the image with a newer RUNNER_VERSION"
    )]
    VersionDeprecated { passed_on: bool },
    /// A code actions/runner does not document.
    #[error("the listener exited {0}")]
    Exited(i32),
    #[error("the listener was killed by a signal")]
    Killed,
}

/// `pass_deprecated`: whether the container was started with
/// `ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1`, so a 7 is the container's exit too.
pub fn after_exit(code: Option<i32>, restarts: u32, pass_deprecated: bool) -> AfterExit {
    match code {
        Some(0) => AfterExit::Done,
        Some(c @ (2 | 5)) if restarts < MAX_RESTARTS => AfterExit::Restart {
            // run.sh waits 5 s; back off from there so a flapping session does not hammer GitHub.
            after: Duration::from_secs(5 << restarts.min(4)).min(Duration::from_secs(60)),
            reason: if c == 2 {
                "retryable error (exit 2)"
            } else {
                "session conflict (exit 5)"
            },
        },
        Some(c @ (2 | 5)) => AfterExit::Fail(Failure::TooManyRestarts { code: c }),
        Some(3 | 4) => AfterExit::AwaitUpdate,
        Some(1) => AfterExit::Fail(Failure::Error),
        Some(6) => AfterExit::Fail(Failure::ConfigRefreshed),
        Some(7) => AfterExit::Fail(Failure::VersionDeprecated {
            passed_on: pass_deprecated,
        }),
        Some(c) => AfterExit::Fail(Failure::Exited(c)),
        None => AfterExit::Fail(Failure::Killed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_done() {
        assert_eq!(after_exit(Some(0), 0, false), AfterExit::Done);
    }

    #[test]
    fn retryable_codes_restart_with_growing_pauses_then_fail() {
        let pauses: Vec<u64> = (0..MAX_RESTARTS)
            .map(|n| match after_exit(Some(2), n, false) {
                AfterExit::Restart { after, .. } => after.as_secs(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(pauses, [5, 10, 20, 40, 60]);
        assert!(
            matches!(after_exit(Some(5), 0, false), AfterExit::Restart { reason, .. } if reason.contains("conflict"))
        );
        assert_eq!(
            after_exit(Some(2), MAX_RESTARTS, false),
            AfterExit::Fail(Failure::TooManyRestarts { code: 2 })
        );
    }

    #[test]
    fn update_codes_wait_for_the_update() {
        assert_eq!(after_exit(Some(3), 0, false), AfterExit::AwaitUpdate);
        assert_eq!(after_exit(Some(4), 9, true), AfterExit::AwaitUpdate);
    }

    /// The exit code each failure becomes is `crate::exit`'s; its tests check 75 and 7.
    #[test]
    fn everything_else_fails_the_life() {
        for (c, failure) in [
            (Some(1), Failure::Error),
            (Some(6), Failure::ConfigRefreshed),
            (Some(7), Failure::VersionDeprecated { passed_on: false }),
            (Some(42), Failure::Exited(42)),
            (None, Failure::Killed),
        ] {
            assert_eq!(after_exit(c, 0, false), AfterExit::Fail(failure), "{c:?}");
        }
    }

    /// actions-runner-controller reads a container's exit 7 as "runner image outdated"; a 75
    /// there would make it recreate the pod forever.
    #[test]
    fn a_deprecated_version_is_passed_on_only_when_the_controller_asked_for_it() {
        assert_eq!(
            after_exit(Some(7), 0, true),
            AfterExit::Fail(Failure::VersionDeprecated { passed_on: true })
        );
        for (c, failure) in [
            (Some(1), Failure::Error),
            (Some(42), Failure::Exited(42)),
            (None, Failure::Killed),
        ] {
            assert_eq!(after_exit(c, 0, true), AfterExit::Fail(failure), "{c:?}");
        }
    }
}
