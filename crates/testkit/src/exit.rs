//! The exit codes of `sysrunner-testkit`'s own commands (`demo`, `fake-github`, `fake-runner`):
//! the one place they are declared. The boxes' hidden commands and the fake listener exit with
//! codes of their own, documented where they are made (`boxes::exec`, `fake_runner::listener`).
//!
//! Numbered after BSD `sysexits.h`, like sysrunner's, which the kit does not share: a test that
//! reads these reads the kit's, never the product's.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It did what it was asked: the demo's life went as planned, the fake stopped on a signal.
    Ok,
    /// A bad command line, or settings the demo refuses (real GitHub credentials) (EX_USAGE).
    Usage,
    /// The kit itself failed, or a binary it needs is missing (EX_SOFTWARE).
    Internal,
    /// What it started failed: the demo's life did not go as planned, the fake could not listen
    /// (EX_TEMPFAIL).
    Failed,
    /// This machine lacks what the demo needs: root, user namespaces, cgroups, dockerd (EX_CONFIG).
    Unsupported,
}

impl Exit {
    pub const fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Usage => 64,
            Exit::Internal => 70,
            Exit::Failed => 75,
            Exit::Unsupported => 78,
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
