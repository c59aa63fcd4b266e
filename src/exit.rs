//! The process exit codes: the one place they are declared. Owns nothing else.

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
            Exit::Usage => "invalid settings or command line; nothing was started",
            Exit::Unavailable => "GitHub unreachable or failing after every retry (API_DEADLINE)",
            Exit::Internal => "internal error, or a command that is not implemented yet",
            Exit::TempFail => {
                "temporary failure worth a restart: dockerd did not start, the runner crashed"
            }
            Exit::Refused => {
                "GitHub refused: bad credentials, missing permission, unknown scope, or a live runner already has this name"
            }
            Exit::Unsupported => {
                "unsupported runtime: the container cannot run dockerd, or this is a host"
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

    #[test]
    fn codes_are_distinct() {
        let mut codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Exit::ALL.len());
    }
}
