//! What to do when `bin/Runner.Listener` exits, by its exit code. Pure.
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
    /// Anything else, or too many restarts: the life ends (exit 75, so the supervisor starts a
    /// fresh one; 7 when `version_deprecated`).
    Fail {
        reason: String,
        /// Exit 7, deprecated version, and the controller asked to hear it as the life's 7.
        version_deprecated: bool,
    },
}

/// `pass_deprecated`: whether the container was started with
/// `ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1`, so a 7 is the container's exit too.
pub fn after_exit(code: Option<i32>, restarts: u32, pass_deprecated: bool) -> AfterExit {
    let fail = |reason: String| AfterExit::Fail {
        reason,
        version_deprecated: false,
    };
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
        Some(c @ (2 | 5)) => fail(format!(
            "the listener exited {c} after {MAX_RESTARTS} restarts"
        )),
        Some(3 | 4) => AfterExit::AwaitUpdate,
        Some(1) => fail("the listener ended with an error (exit 1)".into()),
        Some(6) => fail("the listener's configuration was refreshed (exit 6)".into()),
        Some(7) => AfterExit::Fail {
            reason: "GitHub refuses this runner version as deprecated (exit 7): rebuild the image with a newer RUNNER_VERSION".into(),
            version_deprecated: pass_deprecated,
        },
        Some(c) => fail(format!("the listener exited {c}")),
        None => fail("the listener was killed by a signal".into()),
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
        assert!(matches!(
            after_exit(Some(2), MAX_RESTARTS, false),
            AfterExit::Fail {
                version_deprecated: false,
                ..
            }
        ));
    }

    #[test]
    fn update_codes_wait_for_the_update() {
        assert_eq!(after_exit(Some(3), 0, false), AfterExit::AwaitUpdate);
        assert_eq!(after_exit(Some(4), 9, true), AfterExit::AwaitUpdate);
    }

    #[test]
    fn everything_else_fails_the_life_with_75() {
        for c in [Some(1), Some(6), Some(7), Some(42), None] {
            assert!(
                matches!(
                    after_exit(c, 0, false),
                    AfterExit::Fail {
                        version_deprecated: false,
                        ..
                    }
                ),
                "{c:?}"
            );
        }
    }

    /// actions-runner-controller reads a container's exit 7 as "runner image outdated"; a 75
    /// there would make it recreate the pod forever.
    #[test]
    fn a_deprecated_version_exits_7_only_when_the_controller_asked_for_it() {
        assert!(matches!(
            after_exit(Some(7), 0, true),
            AfterExit::Fail {
                version_deprecated: true,
                ..
            }
        ));
        for c in [Some(1), Some(42), None] {
            assert!(
                matches!(
                    after_exit(c, 0, true),
                    AfterExit::Fail {
                        version_deprecated: false,
                        ..
                    }
                ),
                "{c:?}"
            );
        }
    }
}
