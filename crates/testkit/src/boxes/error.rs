//! The one error type of the boxes harness. Owns wording only; decides nothing.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong while a box starts, runs a command or is torn down.
///
/// None of these is worth a retry inside a test: they mean the machine lacks something (root,
/// cgroups, a binary) or the box's setup is wrong, and the message says which.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("cgroup layout not understood: {0}")]
    Layout(String),
    #[error("invalid box setting: {0}")]
    Invalid(String),
    #[error("the box failed to start: {0}")]
    Setup(String),
    #[error("{what} did not finish within {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("{what} failed ({status})\n--- stdout\n{stdout}\n--- stderr\n{stderr}")]
    Command {
        what: String,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },
    #[error("no free box slot: {0} boxes already run on this machine")]
    NoSlot(u32),
    #[error("teardown left things behind: {0}")]
    Teardown(String),
}

/// `map_err(io_err("what was being done"))`: keeps the syscall's error and says what it was for.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The same for nix's errno values.
pub(crate) fn nix_err(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
    let what = what.into();
    move |e| Error::Io {
        what,
        source: io::Error::from(e),
    }
}
