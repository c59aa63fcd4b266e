//! What to do when `bin/Runner.Listener` exits, by its exit code (REFERENCE.md section 4). Pure.

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
    /// Anything else, or too many restarts: exit 75 so the supervisor starts a fresh life.
    Fail { reason: String },
}

pub fn after_exit(code: Option<i32>, restarts: u32) -> AfterExit {
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
        Some(c @ (2 | 5)) => AfterExit::Fail {
            reason: format!("the listener exited {c} after {MAX_RESTARTS} restarts"),
        },
        Some(3 | 4) => AfterExit::AwaitUpdate,
        Some(1) => AfterExit::Fail {
            reason: "the listener ended with an error (exit 1)".into(),
        },
        Some(6) => AfterExit::Fail {
            reason: "the listener failed internally (exit 6)".into(),
        },
        Some(7) => AfterExit::Fail {
            reason: "this runner version is deprecated (exit 7): update the image's RUNNER_VERSION"
                .into(),
        },
        Some(c) => AfterExit::Fail {
            reason: format!("the listener exited {c}"),
        },
        None => AfterExit::Fail {
            reason: "the listener was killed by a signal".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_done() {
        assert_eq!(after_exit(Some(0), 0), AfterExit::Done);
    }

    #[test]
    fn retryable_codes_restart_with_growing_pauses_then_fail() {
        let pauses: Vec<u64> = (0..MAX_RESTARTS)
            .map(|n| match after_exit(Some(2), n) {
                AfterExit::Restart { after, .. } => after.as_secs(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(pauses, [5, 10, 20, 40, 60]);
        assert!(
            matches!(after_exit(Some(5), 0), AfterExit::Restart { reason, .. } if reason.contains("conflict"))
        );
        assert!(matches!(
            after_exit(Some(2), MAX_RESTARTS),
            AfterExit::Fail { .. }
        ));
    }

    #[test]
    fn update_codes_wait_for_the_update() {
        assert_eq!(after_exit(Some(3), 0), AfterExit::AwaitUpdate);
        assert_eq!(after_exit(Some(4), 9), AfterExit::AwaitUpdate);
    }

    #[test]
    fn everything_else_fails_the_life() {
        for c in [Some(1), Some(6), Some(7), Some(42), None] {
            assert!(matches!(after_exit(c, 0), AfterExit::Fail { .. }), "{c:?}");
        }
    }
}
