//! The process exit codes: the one place they are declared, and the one place each cause of
//! failure becomes one (`impl From<&Error> for Exit` and the impls for the module errors it holds).
//! "Where does exit 75 come from" is answered here. Owns the codes and that mapping, nothing else:
//! it decides no outcome, it only names the code of one.

use crate::assess::Unsupported;
use crate::dockerd::LaunchError;
use crate::error::Error;
use crate::github::ApiError;
use crate::register::RegisterError;
use crate::runner::Failure;
use std::fmt;

/// Every way `sysrunner` ends, with the code a supervisor (compose, Kubernetes) sees.
///
/// The numbers follow BSD `sysexits.h` so that they mean something outside this project too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The runner ran: a job, or a clean stop after a signal.
    Ok,
    /// GitHub refused the runner's version as deprecated (the listener's own exit 7), passed
    /// through only when `ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1`: the code
    /// actions-runner-controller reads as "this scale set's runner image is outdated".
    VersionDeprecated,
    /// Invalid settings or command line (EX_USAGE). Nothing was started.
    Usage,
    /// GitHub unreachable or failing after every retry (EX_UNAVAILABLE).
    Unavailable,
    /// Internal error, or a command that is not implemented yet (EX_SOFTWARE).
    Internal,
    /// A temporary failure worth a restart: dockerd did not start, the runner crashed (EX_TEMPFAIL).
    TempFail,
    /// GitHub refused: bad credentials, missing permission, scope not found, a live runner
    /// already has this name (EX_NOPERM).
    Refused,
    /// The container runtime cannot run dockerd, or this is a host, not a container (EX_CONFIG).
    Unsupported,
    /// `healthcheck` only: unhealthy (Docker's HEALTHCHECK knows only 0 and 1).
    Unhealthy,
}

impl Exit {
    /// All codes, in the order they are documented.
    pub const ALL: [Exit; 9] = [
        Exit::Ok,
        Exit::VersionDeprecated,
        Exit::Usage,
        Exit::Unavailable,
        Exit::Internal,
        Exit::TempFail,
        Exit::Refused,
        Exit::Unsupported,
        Exit::Unhealthy,
    ];

    pub const fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::VersionDeprecated => 7,
            Exit::Usage => 64,
            Exit::Unavailable => 69,
            Exit::Internal => 70,
            Exit::TempFail => 75,
            Exit::Refused => 77,
            Exit::Unsupported => 78,
            Exit::Unhealthy => 1,
        }
    }

    /// One line for `--help` and the README.
    pub const fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "the runner ran: a job, or a clean stop after SIGTERM/SIGINT",
            Exit::VersionDeprecated => {
                "GitHub refuses the image's runner as too old; only with ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1 (actions-runner-controller sets it), else 75"
            }
            Exit::Usage => {
                "invalid settings or command line; nothing was started (`scale`: also SCALE_IMAGE not on the host, SCALE_LISTEN taken)"
            }
            Exit::Unavailable => "GitHub unreachable or failing after every retry (API_DEADLINE)",
            Exit::Internal => "internal error, or a command that is not implemented yet",
            Exit::TempFail => {
                "temporary failure worth a restart: dockerd did not start, the runner crashed (`scale`: the host's Docker Engine failed, or another controller holds the session)"
            }
            Exit::Refused => {
                "GitHub refused: bad credentials, missing permission, unknown scope, or a live runner already has this name"
            }
            Exit::Unsupported => {
                "unsupported runtime: the container cannot run dockerd, or this is a host (`scale`: no runtime for runner containers: no sysbox-runc, privileged not allowed)"
            }
            Exit::Unhealthy => "`healthcheck` only: unhealthy",
        }
    }

    /// The table printed after `--help`.
    pub fn help_table() -> String {
        let mut s = String::from("Exit codes:\n");
        for e in Exit::ALL {
            s.push_str(&format!("  {:>3}  {}\n", e.code(), e.meaning()));
        }
        s
    }

    /// The Markdown table in README.md.
    pub fn markdown_table() -> String {
        let mut s = String::from("| code | meaning |\n|---|---|\n");
        for e in Exit::ALL {
            s.push_str(&format!("| {} | {} |\n", e.code(), e.meaning()));
        }
        s
    }
}

impl Exit {
    /// The code of a command's outcome: 0, or its cause's.
    pub fn of(outcome: &Result<(), Error>) -> Exit {
        match outcome {
            Ok(()) => Exit::Ok,
            Err(e) => Exit::from(e),
        }
    }
}

/// The mapping from causes to codes.
impl From<&Error> for Exit {
    fn from(e: &Error) -> Exit {
        match e {
            Error::Settings(_) | Error::Flag { .. } | Error::CommandLine(_) => Exit::Usage,
            Error::RunnerUser(_) => Exit::Usage,
            Error::Unsupported(u) => Exit::from(u),
            Error::Sandbox(_) => Exit::Unsupported,
            Error::Api(e) => Exit::from(e),
            Error::Register(e) => Exit::from(e),
            Error::Dockerd(e) => Exit::from(e),
            Error::Runner(f) => Exit::from(f),
            Error::Pristine(_)
            | Error::SandboxBuild(_)
            | Error::Configure(_)
            | Error::ListenerStart(_)
            | Error::DockerdDied { .. }
            | Error::CheckCommand(_) => Exit::TempFail,
            Error::Reaper(_)
            | Error::ListenerLost
            | Error::LeftRunning(_)
            | Error::Capture { .. }
            | Error::Json(_) => Exit::Internal,
            Error::Unhealthy(_) => Exit::Unhealthy,
            Error::Scaleset(e) => Exit::from(e),
            // The host's Docker Engine: worth a restart (compose's `restart: always`).
            Error::Engine(_) => Exit::TempFail,
            Error::ScaleRuntime(_) => Exit::Unsupported,
            Error::ScaleImage(_) | Error::ScaleListen(_) => Exit::Usage,
        }
    }
}

impl From<&Unsupported> for Exit {
    fn from(_: &Unsupported) -> Exit {
        Exit::Unsupported
    }
}

impl From<&ApiError> for Exit {
    fn from(e: &ApiError) -> Exit {
        match e {
            // Retrying will not help: credentials, permissions, the scope, the name.
            ApiError::Refused { .. } | ApiError::Duplicate { .. } => Exit::Refused,
            ApiError::Unavailable { .. } | ApiError::Unexpected { .. } => Exit::Unavailable,
        }
    }
}

impl From<&crate::scaleset::ScalesetError> for Exit {
    fn from(e: &crate::scaleset::ScalesetError) -> Exit {
        use crate::scaleset::ScalesetError as E;
        match e {
            E::Rest(e) => Exit::from(e),
            // Credentials, permissions, a group or scale set that is not there.
            E::Refused { .. } | E::Unexpected { .. } => Exit::Refused,
            E::Unavailable { .. } => Exit::Unavailable,
            // Another controller holds the session: a later start may find it gone.
            E::SessionConflict { .. } => Exit::TempFail,
        }
    }
}

impl From<&RegisterError> for Exit {
    fn from(e: &RegisterError) -> Exit {
        match e {
            RegisterError::Api(e) => Exit::from(e),
        }
    }
}

/// Every cause is a restart's worth: a fresh container has fresh pid files and a fresh data root.
/// A data root locked by another sysrunner is the exception that still gets 75; it needs the
/// operator, and its message, repeated at every restart, says what to change.
impl From<&LaunchError> for Exit {
    fn from(_: &LaunchError) -> Exit {
        Exit::TempFail
    }
}

impl From<&Failure> for Exit {
    fn from(f: &Failure) -> Exit {
        match f {
            // actions-runner-controller reads a container's 7 as "runner image outdated".
            Failure::VersionDeprecated { passed_on: true } => Exit::VersionDeprecated,
            Failure::VersionDeprecated { passed_on: false }
            | Failure::TooManyRestarts { .. }
            | Failure::Error
            | Failure::ConfigRefreshed
            | Failure::Exited(_)
            | Failure::Killed => Exit::TempFail,
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{AfterExit, after_exit};

    /// The code a listener's exit ends the life with.
    fn life_exit(code: Option<i32>, pass_deprecated: bool) -> Exit {
        match after_exit(code, 0, pass_deprecated) {
            AfterExit::Fail(f) => Exit::from(&Error::from(f)),
            other => panic!("{code:?} does not end the life: {other:?}"),
        }
    }

    #[test]
    fn each_cause_gets_the_code_its_meaning_documents() {
        use crate::dockerd::StartError;
        let unavailable = || ApiError::Unavailable {
            what: "list runners".into(),
            attempts: 5,
            elapsed: std::time::Duration::from_secs(300),
            deadline: std::time::Duration::from_secs(300),
            last: "503".into(),
        };
        let cases = [
            (
                Error::Settings(crate::config::Problems(vec![])),
                Exit::Usage,
            ),
            (
                Error::Unsupported(Unsupported {
                    runtime: crate::probe::Runtime::Host,
                    reasons: vec![],
                    remedy: None,
                }),
                Exit::Unsupported,
            ),
            (
                Error::Dockerd(LaunchError::Start(StartError::NotReady {
                    socket: "/var/run/docker.sock".into(),
                    timeout: std::time::Duration::from_secs(60),
                })),
                Exit::TempFail,
            ),
            (
                Error::Api(ApiError::Duplicate {
                    name: "r".into(),
                    id: 1,
                }),
                Exit::Refused,
            ),
            (
                Error::Register(RegisterError::Api(unavailable())),
                Exit::Unavailable,
            ),
            (Error::Reaper(std::io::Error::other("no")), Exit::Internal),
            (
                Error::Unhealthy("runner is stopping".into()),
                Exit::Unhealthy,
            ),
        ];
        for (cause, code) in cases {
            assert_eq!(Exit::from(&cause), code, "{cause}");
        }
        assert_eq!(Exit::of(&Ok(())), Exit::Ok);
    }

    #[test]
    fn everything_else_fails_the_life_with_75() {
        for c in [Some(1), Some(6), Some(7), Some(42), None] {
            assert_eq!(life_exit(c, false), Exit::TempFail, "{c:?}");
        }
        assert_eq!(
            Exit::from(&Failure::TooManyRestarts { code: 2 }),
            Exit::TempFail
        );
    }

    /// actions-runner-controller reads a container's exit 7 as "runner image outdated"; a 75
    /// there would make it recreate the pod forever.
    #[test]
    fn a_deprecated_version_exits_7_only_when_the_controller_asked_for_it() {
        assert_eq!(life_exit(Some(7), true), Exit::VersionDeprecated);
        for c in [Some(1), Some(42), None] {
            assert_eq!(life_exit(c, true), Exit::TempFail, "{c:?}");
        }
    }

    #[test]
    fn codes_are_distinct() {
        let mut codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Exit::ALL.len());
    }
}
